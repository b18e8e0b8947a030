package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// machine describes the box: absolute figures only compare on the same one.
func machine() string {
	model := "unknown CPU"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := "?"
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(raw), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return fmt.Sprintf("machine: %d CPUs (%s), %s RAM, %s %s/%s", runtime.NumCPU(), model, mem, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// printResults prints the tables; brokerCPU is the broker CPU column's
// header, which says whose CPU it is (see suite.brokerCPULabel).
func printResults(w io.Writer, out outcome, brokerCPU string) {
	if len(out.backlogs) > 0 {
		printBacklogs(w, out.backlogs, out.baseline, brokerCPU)
	}
	if len(out.latencies) > 0 {
		printLatency(w, out.latencies, out.baseline, brokerCPU)
	}
	if len(out.topics) > 0 {
		printTopics(w, out.topics, out.baseline, brokerCPU)
	}
}

// withBinary prefixes a row with its binary's label when the run measured
// a baseline too (several rows per scenario), and leaves it as it was
// otherwise, so output without -baseline-bin keeps its columns.
func withBinary(several bool, label, row string) string {
	if !several {
		return row
	}
	return label + "\t" + row
}

func printBacklogs(w io.Writer, rows []result, several bool, brokerCPU string) {
	fmt.Fprintf(w, "\nBacklog scenarios (same backlog, same run, median of %d; relay = separate process, acks=all, idempotent):\n", rows[0].runs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, withBinary(several, "binary", fmt.Sprintf("scenario\tevents\tpayload B\trecvlogical s\trecvlogical ev/s\trelay s\trelay ev/s\tratio\trelay MB/s\tpeak RSS MB\trelay CPU s/100k\twalsender CPU s (recv/relay)\t%s\tbroker share\tload\t\n", brokerCPU)))
	for _, r := range rows {
		for _, b := range r.relays {
			run := b.run
			mbps := r.backlog.payloadBytes * float64(r.backlog.events) / run.elapsed.Seconds() / 1e6
			fmt.Fprint(tw, withBinary(several, b.label, fmt.Sprintf("%s\t%d\t%.0f\t%.2f\t%.0f\t%.2f\t%.0f\t%.2fx\t%.1f\t%.1f\t%.2f\t%.1f / %.1f\t%.1f\t%.0f%%\t%s\t\n",
				r.name, r.backlog.events, r.backlog.payloadBytes,
				r.recv.elapsed.Seconds(), r.rate(r.recv),
				run.elapsed.Seconds(), r.rate(run), r.ratio(run), mbps,
				mb(run.peakRSS), run.cpu.Seconds()*100000/float64(r.backlog.events),
				r.recv.walsender.Seconds(), run.walsender.Seconds(), run.brokerCPU.Seconds(),
				100*share(run.brokerCPU, run.cpu, run.walsender), r.load)))
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "broker share = broker CPU / (relay + its walsender + broker CPU) during the relay's run")
	if several {
		fmt.Fprintln(w, "binary: relay = the build under test, the other row = -baseline-bin (named by -baseline-label); ratio = pg_recvlogical's time / that binary's")
	}
}

// printLatency prints one row per latency run: each rate, each binary.
func printLatency(w io.Writer, lat []latencyResult, several bool, brokerCPU string) {
	fmt.Fprintf(w, "\nSteady state: %d-row transactions for %s at each rate (first %s excluded), insert -> readable by a consumer:\n",
		lat[0].rows, lat[0].duration, warmup)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, withBinary(several, "binary", fmt.Sprintf("rate ev/s\twritten\tconsumed\tp50 ms\tp95 ms\tp99 ms\tmax ms\tpeak RSS MB\trelay CPU s/100k\trelay CPU s\twalsender CPU s\t%s\tbroker share\tbench process CPU s\twriter behind at end ms\trelay commit->ack p50/p99 ms (bucket bound)\tload\t\n", brokerCPU)))
	for _, l := range lat {
		fmt.Fprint(tw, withBinary(several, l.label, fmt.Sprintf("%d\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%.2f\t%.1f\t%.1f\t%.1f\t%.0f%%\t%.1f\t%.1f\t%s\t%s\t\n",
			l.rate, l.written, l.seen, ms(l.p50), ms(l.p95), ms(l.p99), ms(l.maxLat), mb(l.relayRSS),
			l.relayCPU.Seconds()*100000/float64(l.written), l.relayCPU.Seconds(), l.walsenderCPU.Seconds(),
			l.brokerCPU.Seconds(), 100*share(l.brokerCPU, l.relayCPU, l.walsenderCPU), l.benchCPU.Seconds(),
			ms(max(0, l.writeLagAtClose)), l.commitToAck(), l.load)))
	}
	tw.Flush()
	for _, l := range lat {
		who := ""
		if several {
			who = " (" + l.label + ")"
		}
		fmt.Fprintf(w, "%d events/s%s, split at the record timestamp (the Postgres commit, ms precision): insert -> commit p50/p99/max %.1f/%.1f/%.1f ms; commit -> readable p50/p99/max %.1f/%.1f/%.1f ms\n",
			l.rate, who,
			ms(l.toCommit[0]), ms(l.toCommit[1]), ms(l.toCommit[2]), ms(l.fromCommit[0]), ms(l.fromCommit[1]), ms(l.fromCommit[2]))
	}
	fmt.Fprintln(w, "relay and walsender CPU: over the relay's life; broker and bench process CPU: while the writer ran and the consumer caught up")
}

// printTopics prints one row per topic count and binary.
func printTopics(w io.Writer, rows []topicsResult, several bool, brokerCPU string) {
	fmt.Fprintf(w, "\nMany topics (topic %s, auto-created with %d partitions; median of %d):\n", topicsTemplate, partitions, rows[0].runs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, withBinary(several, "binary", fmt.Sprintf("topics\tevents\tpayload B\trelay s\trelay ev/s\tpeak RSS MB\trelay CPU s/100k\twalsender CPU s\t%s\tbroker share\tseries with topic label\tseries total\tload\t\n", brokerCPU)))
	for _, r := range rows {
		for _, b := range r.relays {
			run := b.run
			fmt.Fprint(tw, withBinary(several, b.label, fmt.Sprintf("%d\t%d\t%.0f\t%.2f\t%.0f\t%.1f\t%.2f\t%.1f\t%.1f\t%.0f%%\t%d\t%d\t%s\t\n",
				min(r.count, r.backlog.events), r.backlog.events, r.backlog.payloadBytes, run.elapsed.Seconds(),
				float64(r.backlog.events)/run.elapsed.Seconds(), mb(run.peakRSS), run.cpu.Seconds()*100000/float64(r.backlog.events),
				run.walsender.Seconds(), run.brokerCPU.Seconds(), 100*share(run.brokerCPU, run.cpu, run.walsender),
				run.series.topic, run.series.total, r.load)))
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "relay s: process start until the high watermarks of one %s* topic per aggregate sum to the backlog (checked every %s, %.0f%% of the time so far or %dx the last check's time, whichever is longest); series: sample lines of the relay's /metrics then\n", topicsPrefix, topicsPoll, 100*topicsPollShare, topicsPollCost)
}

// share is broker / (broker + relay + walsender): the broker's part of the
// CPU the delivery path used.
func share(broker, relay, walsender time.Duration) float64 {
	total := broker + relay + walsender
	if total <= 0 {
		return 0
	}
	return float64(broker) / float64(total)
}

// loadAvg is the 1-minute load average: above the CPU count, something
// else competed with the run and its figures are suspect.
func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// printIncidents prints the incidents table: the run with the median
// re-sent count of each incident, and every run's count.
func printIncidents(w io.Writer, inc []incidentResult, o options) {
	if len(inc) == 0 {
		return
	}
	fmt.Fprintf(w, "\nIncidents at %d events/s (%d-row transactions), relay flags: %s; median of %d runs by re-sent:\n",
		o.rate, o.latencyRows, relayFlagsLabel(o.relayArgs), o.runs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "incident\twritten\twrite rate ev/s\tre-sent\tper incident\tre-sent s of traffic\tlost\tre-sent in each run\tload\t\n")
	for _, r := range inc {
		each := make([]string, len(r.runs))
		for i, run := range r.runs {
			each[i] = strconv.Itoa(run.resent)
		}
		m := r.median
		per := make([]string, len(m.perIncident))
		for i, n := range m.perIncident {
			per[i] = strconv.Itoa(n)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%d\t%s\t%.2f\t%d\t%s\t%s\t\n", r.name, m.written, m.rate, m.resent,
			strings.Join(per, " + "), float64(m.resent)/m.rate, m.lost, strings.Join(each, " "), m.load)
	}
	tw.Flush()
	for _, r := range inc {
		fmt.Fprintf(w, "%s: %s\n", r.name, r.desc)
	}
}

func relayFlagsLabel(args []string) string {
	if len(args) == 0 {
		return "defaults"
	}
	return strings.Join(args, " ")
}

// commitToAck is the relay's own commit-to-ack p50/p99, or "-" for a
// binary that exports no such histogram (bench/naiverelay).
func (l latencyResult) commitToAck() string {
	if !l.relayHist {
		return "-"
	}
	return fmt.Sprintf("<=%.1f / <=%.1f", l.relayP50*1000, l.relayP99*1000)
}
