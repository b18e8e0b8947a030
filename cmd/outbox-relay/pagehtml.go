package main

import (
	_ "embed"
	"io"
	"strconv"
	"strings"
)

// The status page is written by hand rather than with html/template: that
// package reaches reflect.Value.MethodByName (text/template calls methods by
// name), and once a binary can do that the linker keeps every exported
// method of every type it keeps. Dropping it took 5 MB off the binary (30.6
// to 25.5 MB) and 2 MB off its resident pages (docs/benchmarks.md, "Resident
// pages of the binary"). Every value goes through htmlWriter.f, which
// escapes it as html/template did in text and in quoted attributes, the
// only places the page puts values.

//go:embed statuspage.css
var statusPageCSS string

// htmlEscaper makes the replacements of html/template's htmlEscaper: the
// five markup characters, NUL, and '+' (against UTF-7 sniffing).
var htmlEscaper = strings.NewReplacer(
	"\x00", "\uFFFD", `"`, "&#34;", "&", "&amp;", "'", "&#39;", "+", "&#43;", "<", "&lt;", ">", "&gt;")

// htmlWriter writes markup; the first write error sticks and ends the rest.
type htmlWriter struct {
	w   io.Writer
	err error
}

func (h *htmlWriter) raw(s string) {
	if h.err == nil {
		_, h.err = io.WriteString(h.w, s)
	}
}

// f writes format with each %s replaced by the next value, escaped. The
// format is markup from this file, never data.
func (h *htmlWriter) f(format string, values ...string) {
	for _, v := range values {
		before, after, ok := strings.Cut(format, "%s")
		if !ok {
			panic("htmlWriter.f: more values than %s in " + strconv.Quote(format))
		}
		h.raw(before)
		if h.err == nil {
			_, h.err = htmlEscaper.WriteString(h.w, v)
		}
		format = after
	}
	if strings.Contains(format, "%s") {
		panic("htmlWriter.f: fewer values than %s in " + strconv.Quote(format))
	}
	h.raw(format)
}

// writePage writes the status page for v.
func writePage(w io.Writer, v pageView) error {
	h := &htmlWriter{w: w}
	refresh := strconv.Itoa(v.Refresh)
	h.raw("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n" +
		"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n")
	h.f("<meta http-equiv=\"refresh\" content=\"%s\">\n<title>outbox-relay: %s</title>\n", refresh, v.Phase)
	h.raw("<style>\n" + statusPageCSS + "</style>\n</head>\n<body>\n<main>\n")
	h.f("<h1>outbox-relay <span class=\"phase %s\" id=\"phase\">%s</span></h1>\n", v.PhaseClass, v.Phase)
	h.f("<div class=\"sub\">slot <b id=\"slot\">%s</b> · %s in this phase · %s · %s</div>\n", v.Slot, v.PhaseFor, v.Version, v.Now)
	if v.Detail != "" {
		h.f("<p class=\"sub\" id=\"detail\">%s</p>", v.Detail)
	}
	h.f("\n<p class=\"sub\">%s</p>\n\n", v.Advice)
	writeCards(h, "Position", v.Position)
	h.raw("\n")
	writeCards(h, "Delivery", v.Delivery)
	h.f("\n<h2>Last %s</h2>\n<div class=\"charts\">\n", v.ChartSpan)
	for _, c := range v.Charts {
		writeChart(h, c)
	}
	h.raw("</div>\n\n<h2>Last problem</h2>\n")
	if p := v.Problem; p != nil {
		h.f("<div class=\"problem\" id=\"problem\">\n<b>%s</b> at %s (%s ago)\n<pre id=\"problem-text\">%s</pre>\n<div>%s</div>\n</div>",
			p.Phase, p.At, p.Ago, p.Text, p.Advice)
	} else {
		h.raw("<p class=\"sub\" id=\"problem\">none since start</p>")
	}
	h.f("\n\n<footer>Refreshes every %s s. Numbers are this process's own <a href=\"metrics\">/metrics</a>; "+
		"<a href=\"readyz\">/readyz</a>, <a href=\"healthz\">/healthz</a>. Runbook: docs/operations.md.</footer>\n"+
		"</main>\n</body>\n</html>\n", refresh)
	return h.err
}

func writeCards(h *htmlWriter, title string, values []pageValue) {
	h.f("<h2>%s</h2>\n<div class=\"cards\">\n", title)
	for _, c := range values {
		h.f("<div class=\"card\"><div class=\"k\">%s</div><div class=\"v\" data-metric=\"%s\" data-value=\"%s\">%s</div></div>\n",
			c.Label, c.Metric, c.Raw, c.Value)
	}
	h.raw("</div>\n")
}

func writeChart(h *htmlWriter, c pageChart) {
	w, ht := strconv.Itoa(c.W), strconv.Itoa(c.H)
	h.f("<figure style=\"margin:0\">\n<svg viewBox=\"0 0 %s %s\" role=\"img\" aria-label=\"%s\" data-chart=\"%s\">\n", w, ht, c.Title, c.ID)
	h.f("<text x=\"6\" y=\"14\" font-size=\"11\" fill=\"#5b6472\">%s · max %s</text>\n", c.Title, c.Max)
	h.f("<line x1=\"0\" y1=\"%s\" x2=\"%s\" y2=\"%s\" stroke=\"#dde1e6\"/>\n", ht, w, ht)
	if c.Points != "" {
		h.f("<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"%s\"/>", c.Color, c.Points)
	} else {
		h.raw("<text x=\"6\" y=\"40\" font-size=\"11\" fill=\"#5b6472\">collecting samples</text>")
	}
	h.raw("\n</svg>\n</figure>\n")
}
