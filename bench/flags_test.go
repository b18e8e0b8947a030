package main

import (
	"io"
	"slices"
	"strings"
	"testing"
)

func TestParseFlagsRatesAndTopicCounts(t *testing.T) {
	cases := []struct {
		name       string
		args       []string
		rates      []int
		topics     []int
		scenarios  []string
		wantErrSub string
	}{
		{name: "defaults", args: nil, rates: []int{5000}, topics: []int{2000},
			scenarios: []string{"drain", "huge", "latency", "latency15k", "payload"}},
		{name: "-rate alone", args: []string{"-rate", "700"}, rates: []int{700}, topics: []int{2000}},
		{name: "-rates replaces -rate", args: []string{"-rate", "700", "-rates", "1000, 5000,15000"}, rates: []int{1000, 5000, 15000}, topics: []int{2000}},
		{name: "-topics-counts replaces -topics-count", args: []string{"-topics-count", "9", "-topics-counts", "1,100,2000"}, rates: []int{5000}, topics: []int{1, 100, 2000}},
		{name: "topics by name", args: []string{"-scenarios", "topics,latency"}, rates: []int{5000}, topics: []int{2000}, scenarios: []string{"topics", "latency"}},
		{name: "bad rate", args: []string{"-rates", "1000,fast"}, wantErrSub: `-rates: "fast" is not a positive rate`},
		{name: "zero topics", args: []string{"-topics-counts", "0"}, wantErrSub: `-topics-counts: "0" is not a positive topic count`},
		{name: "zero topics-n", args: []string{"-topics-n", "0"}, wantErrSub: "counts must be positive"},
		{name: "baseline label with a space", args: []string{"-baseline-bin", "/bin/true", "-baseline-label", "naive relay"}, wantErrSub: `-baseline-label "naive relay": use 1 to 16 letters`},
		{name: "empty baseline label", args: []string{"-baseline-bin", "/bin/true", "-baseline-label", ""}, wantErrSub: `-baseline-label "": use 1 to 16`},
		{name: "baseline label relay", args: []string{"-baseline-bin", "/bin/true", "-baseline-label", "relay"}, wantErrSub: "other than relay"},
		{name: "baseline label alone", args: []string{"-baseline-label", "naive"}, wantErrSub: "give -baseline-bin too"},
		{name: "unknown scenario", args: []string{"-scenarios", "topic"}, wantErrSub: `unknown scenario "topic"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args, io.Discard)
			if tc.wantErrSub != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrSub) {
					t.Fatalf("parseFlags(%q) = %v, want an error containing %q", tc.args, err, tc.wantErrSub)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tc.args, err)
			}
			if !slices.Equal(o.rates, tc.rates) || !slices.Equal(o.topicsCounts, tc.topics) {
				t.Errorf("rates %v, topic counts %v; want %v, %v", o.rates, o.topicsCounts, tc.rates, tc.topics)
			}
			if tc.scenarios != nil && !slices.Equal(o.scenarios, tc.scenarios) {
				t.Errorf("scenarios %v, want %v", o.scenarios, tc.scenarios)
			}
		})
	}
}

func TestCountSeries(t *testing.T) {
	text := `# HELP outbox_relay_sink_acked_total Events acknowledged by Kafka.
# TYPE outbox_relay_sink_acked_total counter
outbox_relay_sink_acked_total{topic="outbox.event.order-1"} 10
outbox_relay_sink_acked_total{topic="(other)"} 90
outbox_relay_sink_errors_total{kind="retriable",topic="t"} 0
outbox_relay_events_acked_total 100
outbox_relay_dead_letters_total{original_topic="t"} 0

go_goroutines 12
`
	got := countSeries(text)
	if want := (metricSeries{topic: 3, total: 6}); got != want {
		t.Fatalf("countSeries = %+v, want %+v", got, want)
	}
}
