package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/internal/tooltest"
	"github.com/outbox-relay/outbox-relay/relay"
)

// chromium runs a headless Chromium on url with extra flags and returns
// what it printed (the DOM after load, with --dump-dom).
func chromium(ctx context.Context, t *testing.T, url string, extra ...string) string {
	t.Helper()
	bin := tooltest.Need(t, "apt-get install -y chromium", "chromium", "chromium-browser")
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--user-data-dir=" + t.TempDir()}, extra...)
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", extra, err, out)
	}
	return string(out)
}

// pageValues are the page's data-metric values, as the browser has them.
func pageValues(t *testing.T, dom string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	re := regexp.MustCompile(`data-metric="([a-z_]+)" data-value="([^"]*)"`)
	for _, m := range re.FindAllStringSubmatch(dom, -1) {
		if m[1] == "derived" {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("%s: data-value %q: %v", m[1], m[2], err)
		}
		out[m[1]] = v
	}
	return out
}

// TestStatusPageInChromium: the page renders in a real browser, offline,
// and every number on it lies between the /metrics scrapes taken just
// before and just after the browser loaded it (the positions move with
// each status update; the delivered count must be exact).
func TestStatusPageInChromium(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := newFixture(t)
	d := f.start(ctx, t, "--progress-interval", "0")
	d.waitReady(ctx, t)
	const n = 25
	types := make([]string, n)
	for i := range types {
		types[i] = []string{"order", "payment"}[i%2]
	}
	_, at := f.insert(ctx, types...)
	if _, err := kafkatest.ReadAll(ctx, f.Kafka.Addrs(), relaytest.Topics("order", "payment"), n); err != nil {
		t.Fatal(err)
	}
	f.WaitConfirmed(ctx, f.slot, at)
	var before string
	if !eventually.True(ctx, 50*time.Millisecond, func() bool {
		_, before = d.get(t, "/metrics")
		active, _ := metric(before, "outbox_relay_slot_active")
		confirmed, _ := metric(before, mSlotFlushLSN)
		acked, _ := metric(before, mAcked)
		return active == 1 && confirmed >= float64(at) && acked == n
	}) {
		t.Fatalf("metrics never showed the slot polled past %s:\n%s", at, before)
	}

	dom := chromium(ctx, t, "http://"+d.addr+"/", "--dump-dom")
	_, after := d.get(t, "/metrics")
	got := pageValues(t, dom)
	// Gauges that rise and fall (lag, retained WAL, in flight) can be
	// anywhere between two scrapes: only that the page shows them, >= 0.
	for _, name := range []string{mLagBytes, mRetainedBytes, mInflightEvents, mInflightBytes} {
		if v, ok := got[name]; !ok || v < 0 {
			t.Errorf("the page shows %s = %v (shown: %v), want a value >= 0", name, v, ok)
		}
	}
	for _, name := range []string{mAcked, mConfirmedLSN, mReceivedLSN, mSlotFlushLSN, mServerLSN} {
		v, ok := got[name]
		if !ok {
			t.Errorf("the page shows no %s", name)
			continue
		}
		lo, _ := metric(before, name)
		hi, _ := metric(after, name)
		if v < lo || v > hi {
			t.Errorf("page %s = %v, /metrics had %v before and %v after", name, v, lo, hi)
		}
	}
	if got[mAcked] != n {
		t.Errorf("page shows %v events delivered, want %d", got[mAcked], n)
	}
	for _, want := range []string{`id="phase">streaming<`, `id="slot">` + f.slot + `<`, `data-chart="lag"`, `data-chart="throughput"`} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page lacks %q:\n%s", want, dom)
		}
	}
	if regexp.MustCompile(`(?i)(src|href)="(https?:)?//`).MatchString(dom) {
		t.Errorf("the page loads something from elsewhere; it must work offline:\n%s", dom)
	}
	f.stopRelay(ctx, t, d)
}

// TestStatusPageEscapes: error texts quote user data (publication and table
// names, topics made from row values); the page shows them as text, in a
// real browser, never as markup.
func TestStatusPageEscapes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const hostile = `publication "<img id=injected src=x onerror=\"document.title='pwned'\">" does not exist; </pre><script>document.title='pwned'</script>`
	now := time.Now()
	cur := vitals{At: now, State: relay.State{Phase: relay.PhaseReconnecting, Detail: hostile, Since: now.Add(-time.Minute)},
		Problem: relay.State{Phase: relay.PhaseReconnecting, Detail: hostile, Since: now.Add(-time.Minute)}, HasProblem: true}
	view := buildView(cur, nil, `slot<b>"x"`, "test <build>")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := writePage(w, view); err != nil {
			t.Error(err)
		}
	}))
	defer srv.Close()
	dom := chromium(ctx, t, srv.URL, "--dump-dom")
	for _, bad := range []string{`id="injected"`, `<script>`, `pwned</title>`, `<b>"x"`} {
		if strings.Contains(dom, bad) {
			t.Errorf("the browser parsed user data as markup (%q):\n%s", bad, dom)
		}
	}
	if !strings.Contains(dom, "&lt;img id=injected") || !strings.Contains(dom, `slot&lt;b&gt;"x"`) {
		t.Errorf("the page does not show the error text as text:\n%s", dom)
	}
}

// TestStatusPageShowsLastProblem: with Kafka unreachable the session fails
// and restarts; the page names the phase, the error and what to do.
func TestStatusPageShowsLastProblem(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t)
	// A later flag wins: the broker address is a closed port.
	d := f.start(ctx, t, "--progress-interval", "0", "--kafka-brokers", "127.0.0.1:1", "--kafka-timeout", "1s")
	var page string
	if !eventually.True(ctx, 50*time.Millisecond, func() bool {
		_, page = d.get(t, "/")
		return strings.Contains(page, `<div class="problem" id="problem">`)
	}) {
		t.Fatalf("the page never showed a problem:\n%s\n%s", page, d.log.String())
	}
	for _, want := range []string{"<b>reconnecting</b>", "127.0.0.1:1", "restarts from the slot"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page's problem lacks %q:\n%s", want, page)
		}
	}
	if err := d.stop(); err != nil {
		t.Fatalf("relay: %v", err)
	}
}

// TestStatusPageEscapesEveryValue: every value the page shows is written
// escaped, each in its own place. Each field of the view holds markup
// naming the field; the page must show every one of them as escaped text
// and none as markup.
func TestStatusPageEscapesEveryValue(t *testing.T) {
	mark := func(field string) string { return "<i>" + field + "</i>'\"+&\x00" }
	esc := func(field string) string { return "&lt;i&gt;" + field + "&lt;/i&gt;&#39;&#34;&#43;&amp;\uFFFD" }
	card := func(p string) pageValue {
		return pageValue{Label: mark(p + ".Label"), Value: mark(p + ".Value"), Metric: mark(p + ".Metric"), Raw: mark(p + ".Raw")}
	}
	chart := func(p, points string) pageChart {
		return pageChart{ID: mark(p + ".ID"), Title: mark(p + ".Title"), Color: mark(p + ".Color"), Max: mark(p + ".Max"), Points: points, W: 600, H: 140}
	}
	v := pageView{Refresh: 5, Phase: mark("Phase"), PhaseClass: mark("PhaseClass"), PhaseFor: mark("PhaseFor"),
		Slot: mark("Slot"), Version: mark("Version"), Now: mark("Now"), Detail: mark("Detail"), Advice: mark("Advice"),
		Position: []pageValue{card("Position")}, Delivery: []pageValue{card("Delivery")}, ChartSpan: mark("ChartSpan"),
		Charts:  []pageChart{chart("Chart0", mark("Chart0.Points")), chart("Chart1", "")},
		Problem: &pageProblem{Phase: mark("Problem.Phase"), At: mark("Problem.At"), Ago: mark("Problem.Ago"), Text: mark("Problem.Text"), Advice: mark("Problem.Advice")}}
	var b strings.Builder
	if err := writePage(&b, v); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, field := range []string{"Phase", "PhaseClass", "PhaseFor", "Slot", "Version", "Now", "Detail", "Advice", "ChartSpan",
		"Position.Label", "Position.Value", "Position.Metric", "Position.Raw", "Delivery.Label", "Delivery.Value", "Delivery.Metric", "Delivery.Raw",
		"Chart0.ID", "Chart0.Title", "Chart0.Color", "Chart0.Max", "Chart0.Points", "Chart1.ID", "Chart1.Title", "Chart1.Max",
		"Problem.Phase", "Problem.At", "Problem.Ago", "Problem.Text", "Problem.Advice"} {
		if !strings.Contains(page, esc(field)) {
			t.Errorf("the page does not show %s escaped (%q)", field, esc(field))
		}
	}
	if strings.Contains(page, "<i>") || strings.Contains(page, "\x00") {
		t.Errorf("the page writes a value unescaped:\n%s", page)
	}
	for _, want := range []string{`content="5"`, `viewBox="0 0 600 140"`, "collecting samples", "Refreshes every 5 s."} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q:\n%s", want, page)
		}
	}
}
