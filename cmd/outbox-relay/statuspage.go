package main

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/outbox-relay/outbox-relay/relay"
)

// The status page at / is for a person with a browser (or a phone) and no
// Grafana: the phase, the positions, the lag, what is in flight, the
// throughput, the last problem with what to do about it, and a chart of the
// last minutes. It is rendered on the server from the process's own
// metrics, with no script and no external asset (it works offline), and
// every value is escaped (error texts quote user data): see pagehtml.go.

// History of the status page's charts: a sample every historyStep for
// historySpan.
const (
	historyStep    = 5 * time.Second
	historySpan    = 10 * time.Minute
	pageRefresh    = 5 // seconds
	throughputOver = time.Minute
)

// pageView is everything the page shows, already formatted.
type pageView struct {
	Refresh                     int
	Phase, PhaseClass, PhaseFor string
	Slot, Version, Now          string
	Detail, Advice              string
	Position, Delivery          []pageValue
	ChartSpan                   string
	Charts                      []pageChart
	Problem                     *pageProblem
}

// pageValue is one number; Metric and Raw let a reader (and the test) match
// it to /metrics.
type pageValue struct {
	Label, Value, Metric, Raw string
}

type pageProblem struct {
	Phase, At, Ago, Text, Advice string
}

type pageChart struct {
	ID, Title, Color, Max, Points string
	W, H                          int
}

// statusPage serves the page. slot names the relay's slot.
func statusPage(src source, hist *history, slot, version string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		cur, err := src.read()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		view := buildView(cur, hist.series(), slot, version)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		// The page needs nothing from elsewhere; say so to the browser.
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'")
		// A write error means the client went away; the headers are sent.
		_ = writePage(w, view)
	})
}

func buildView(cur vitals, past []vitals, slot, version string) pageView {
	v := pageView{
		Refresh: pageRefresh, Phase: string(cur.State.Phase), PhaseClass: phaseClass(cur.State.Phase),
		PhaseFor: shortDuration(cur.At.Sub(cur.State.Since)), Slot: slot, Version: version,
		Now: cur.At.UTC().Format("2006-01-02 15:04:05 MST"), Detail: cur.State.Detail,
		Advice: advice(cur.State.Phase), ChartSpan: shortDuration(historySpan),
	}
	v.Position = []pageValue{
		lsnValue("confirmed to Postgres (relay)", mConfirmedLSN, cur.ConfirmedLSN),
		lsnValue("received from the stream", mReceivedLSN, cur.ReceivedLSN),
		lsnValue("slot confirmed_flush_lsn", mSlotFlushLSN, cur.SlotFlushLSN),
		lsnValue("server WAL", mServerLSN, cur.ServerLSN),
		bytesValue("lag (WAL not yet confirmed)", mLagBytes, cur.LagBytes),
		bytesValue("WAL retained for the slot", mRetainedBytes, cur.RetainedBytes),
	}
	perSec, lagSec := "—", "—"
	if base, ok := sampleBefore(past, cur.At.Add(-throughputOver)); ok {
		if r, ok := rateBetween(base, cur); ok {
			perSec = strconv.FormatFloat(r.PerSecond, 'f', 1, 64) + " /s over " + shortDuration(r.Window)
			if r.Acked > 0 {
				lagSec = strconv.FormatFloat(r.LagSeconds, 'f', 3, 64) + " s"
			}
		}
	}
	v.Delivery = []pageValue{
		countValue("events delivered (acked)", mAcked, cur.Acked),
		{Label: "throughput", Value: perSec, Metric: "derived", Raw: ""},
		{Label: "lag in time (commit to ack, mean)", Value: lagSec, Metric: "derived", Raw: ""},
		countValue("in flight: events", mInflightEvents, cur.InflightEvents),
		bytesValue("in flight: bytes", mInflightBytes, cur.InflightBytes),
	}
	v.Charts = charts(append(past, cur))
	if cur.HasProblem {
		p := cur.Problem
		v.Problem = &pageProblem{Phase: string(p.Phase), At: p.Since.UTC().Format("2006-01-02 15:04:05 MST"),
			Ago: shortDuration(cur.At.Sub(p.Since)), Text: p.Detail, Advice: advice(p.Phase)}
	}
	return v
}

// sampleBefore returns the newest sample at or before t, or else the oldest.
func sampleBefore(past []vitals, t time.Time) (vitals, bool) {
	if len(past) == 0 {
		return vitals{}, false
	}
	best := past[0]
	for _, s := range past {
		if !s.At.After(t) {
			best = s
		}
	}
	return best, true
}

func phaseClass(p relay.Phase) string {
	switch p {
	case relay.PhaseStreaming:
		return "ok"
	case relay.PhaseStandby, relay.PhaseStarting:
		return "idle"
	case relay.PhaseReconnecting, relay.PhaseStalled:
		return "warn"
	default:
		return "bad"
	}
}

// advice is what an operator does about a phase; the runbook sections are
// in docs/operations.md.
func advice(p relay.Phase) string {
	switch p {
	case relay.PhaseStreaming:
		return "Streaming: events go to Kafka and the slot follows the acks."
	case relay.PhaseStarting:
		return "Starting: checking the server and opening the stream and the producer."
	case relay.PhaseStandby:
		return "Hot standby: another process holds the slot; this one takes over when it goes (runbook: Failover of the relay)."
	case relay.PhaseReconnecting:
		return "The session failed and restarts from the slot's confirmed position with backoff; nothing is lost. If it keeps failing, the error names the cause (runbook: Topic missing, Kafka down)."
	case relay.PhaseStalled:
		return "Kafka has acked nothing for --stall-timeout with events in flight; the producer retries in order (runbook: Kafka down)."
	default:
		return "Stopped on an error that needs a human: the message names the fix (runbook: Poison event, Gap report, Outbox left the publication)."
	}
}

func lsnValue(label, metric string, v float64) pageValue {
	return pageValue{Label: label, Value: lsn(v), Metric: metric, Raw: raw(v)}
}

func countValue(label, metric string, v float64) pageValue {
	return pageValue{Label: label, Value: strconv.FormatFloat(v, 'f', -1, 64), Metric: metric, Raw: raw(v)}
}

func bytesValue(label, metric string, v float64) pageValue {
	return pageValue{Label: label, Value: humanBytes(v), Metric: metric, Raw: raw(v)}
}

func raw(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func humanBytes(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for ; v >= 1024 && i < len(units)-1; i++ {
		v /= 1024
	}
	if i == 0 {
		return strconv.FormatFloat(v, 'f', 0, 64) + " B"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + units[i]
}

func shortDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return "<1s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

// charts draws the slot's lag and the throughput over the samples, each
// scaled to its own maximum.
func charts(samples []vitals) []pageChart {
	const w, h = 600, 140
	lag := make([]float64, len(samples))
	rate := make([]float64, len(samples))
	for i, s := range samples {
		lag[i] = s.LagBytes
		if i > 0 {
			if r, ok := rateBetween(samples[i-1], s); ok {
				rate[i] = r.PerSecond
			}
		}
	}
	if len(rate) > 1 {
		rate = rate[1:] // the first sample has no rate
	}
	return []pageChart{
		{ID: "lag", Title: "lag (bytes)", Color: "#b26b00", Max: humanBytes(maxOf(lag)), Points: polyline(lag, w, h), W: w, H: h},
		{ID: "throughput", Title: "throughput (events/s)", Color: "#1f5fa8", Max: strconv.FormatFloat(maxOf(rate), 'f', 1, 64) + " /s",
			Points: polyline(rate, w, h), W: w, H: h},
	}
}

func maxOf(vs []float64) float64 {
	m := 0.0
	for _, v := range vs {
		m = max(m, v)
	}
	return m
}

// polyline places vs left to right over the width, 0 at the bottom and the
// maximum 20 px below the top (room for the title); "" under two points.
func polyline(vs []float64, w, h int) string {
	if len(vs) < 2 {
		return ""
	}
	top := maxOf(vs)
	if top == 0 {
		top = 1
	}
	var b strings.Builder
	for i, v := range vs {
		x := float64(w) * float64(i) / float64(len(vs)-1)
		y := float64(h) - (float64(h)-20)*v/top
		fmt.Fprintf(&b, "%.1f,%.1f ", x, y)
	}
	return strings.TrimSpace(b.String())
}
