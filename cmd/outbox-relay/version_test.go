package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

// saramaPin is the sarama version go.mod requires: the one a build links.
func saramaPin(t *testing.T) string {
	t.Helper()
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/IBM/sarama (v\S+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod requires no github.com/IBM/sarama")
	}
	return string(m[1])
}

func TestVersionNamesTheBuild(t *testing.T) {
	want := []string{"outbox-relay ", runtime.Version(), "sarama " + saramaPin(t), "commit "}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), args, noEnv, &out, &errOut); err != nil {
			t.Fatalf("%v: %v (stderr: %s)", args, err, errOut.String())
		}
		for _, w := range want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v printed %q, lacking %q", args, out.String(), w)
			}
		}
	}
	if err := run(context.Background(), []string{"version", "extra"}, noEnv, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("version with an argument: no error")
	}
}

// progressLine is the part of a "progress" log line the test reads.
type progressLine struct {
	Message         string  `json:"message"`
	Delivered       int64   `json:"events_delivered"`
	PerSecond       float64 `json:"events_per_second"`
	ConfirmedLSN    string  `json:"confirmed_lsn"`
	LagBytes        *int64  `json:"lag_bytes"`
	ServerLSN       string  `json:"server_lsn"`
	InflightEvents  int64   `json:"inflight_events"`
	IntervalBatches int64   `json:"events_delivered_interval"`
}

func progressLines(logText string) []progressLine {
	var out []progressLine
	sc := bufio.NewScanner(strings.NewReader(logText))
	for sc.Scan() {
		var l progressLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Message == "progress" {
			out = append(out, l)
		}
	}
	return out
}

// TestProgressLineAndBuildInfo: a log-only operator sees the relay deliver
// (a progress line with the events, the confirmed position and the lag),
// and /metrics names the running build.
func TestProgressLineAndBuildInfo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t)
	d := f.start(ctx, t, "--progress-interval", "300ms")
	d.waitReady(ctx, t)

	const n = 12
	types := make([]string, n)
	for i := range types {
		types[i] = "order"
	}
	_, at := f.insert(ctx, types...)
	if _, err := kafkatest.ReadAll(ctx, f.Kafka.Addrs(), relaytest.Topics("order"), n); err != nil {
		t.Fatal(err)
	}
	f.WaitConfirmed(ctx, f.slot, at)

	var last progressLine
	if !eventually.True(ctx, 50*time.Millisecond, func() bool {
		lines := progressLines(d.log.String())
		if len(lines) == 0 {
			return false
		}
		last = lines[len(lines)-1]
		confirmed, err := pglogrepl.ParseLSN(last.ConfirmedLSN)
		return err == nil && last.Delivered == n && confirmed >= at && last.LagBytes != nil && last.ServerLSN != ""
	}) {
		t.Fatalf("no progress line showed %d events delivered and a confirmed position at or past %s; last: %+v\n%s", n, at, last, d.log.String())
	}
	var sum int64
	for _, l := range progressLines(d.log.String()) {
		sum += l.IntervalBatches
		if l.PerSecond < 0 {
			t.Errorf("events_per_second %v < 0", l.PerSecond)
		}
	}
	if sum != n {
		t.Errorf("the progress lines' per-interval deliveries add up to %d, want %d", sum, n)
	}

	_, scrape := d.get(t, "/metrics")
	want := `outbox_relay_build_info{commit="`
	if !strings.Contains(scrape, want) || !strings.Contains(scrape, `goversion="`+runtime.Version()+`"`) ||
		!strings.Contains(scrape, `sarama="`+saramaPin(t)+`"`) {
		t.Errorf("/metrics lacks outbox_relay_build_info with this build's labels:\n%s", grepLines(scrape, "build_info"))
	}
	f.stopRelay(ctx, t, d)
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
