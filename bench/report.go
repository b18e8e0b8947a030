package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
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

func printResults(w io.Writer, rows []result, lat []latencyResult) {
	if len(rows) > 0 {
		fmt.Fprintf(w, "\nBacklog scenarios (same backlog, same run, median of %d; relay = separate process, acks=all, idempotent):\n", rows[0].runs)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "scenario\tevents\tpayload B\trecvlogical s\trecvlogical ev/s\trelay s\trelay ev/s\tratio\trelay MB/s\tpeak RSS MB\trelay CPU s/100k\twalsender CPU s (recv/relay)\tbroker CPU s\tload\t")
		for _, r := range rows {
			mbps := r.backlog.payloadBytes * float64(r.backlog.events) / r.relay.elapsed.Seconds() / 1e6
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.0f\t%.2f\t%.0f\t%.2fx\t%.1f\t%.1f\t%.2f\t%.1f / %.1f\t%.1f\t%s\t\n",
				r.name, r.backlog.events, r.backlog.payloadBytes,
				r.recv.elapsed.Seconds(), r.rate(r.recv),
				r.relay.elapsed.Seconds(), r.rate(r.relay), r.ratio(), mbps,
				mb(r.relay.peakRSS), r.relay.cpu.Seconds()*100000/float64(r.backlog.events),
				r.recv.walsender.Seconds(), r.relay.walsender.Seconds(), r.relay.benchCPU.Seconds(), r.load)
		}
		tw.Flush()
	}
	for _, l := range lat {
		fmt.Fprintf(w, "\nSteady state: %d events/s in %d-row transactions for %s (first %s excluded), insert -> readable by a consumer:\n",
			l.rate, l.rows, l.duration, warmup)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "written\tconsumed\tp50 ms\tp95 ms\tp99 ms\tmax ms\tpeak RSS MB\trelay CPU s/100k\tbroker+writer+consumer CPU s\twriter behind at end ms\trelay commit->ack p50/p99 ms (bucket bound)\tload\t")
		fmt.Fprintf(tw, "%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%.2f\t%.1f\t%.1f\t<=%.1f / <=%.1f\t%s\t\n",
			l.written, l.seen, ms(l.p50), ms(l.p95), ms(l.p99), ms(l.maxLat), mb(l.relayRSS),
			l.relayCPU.Seconds()*100000/float64(l.written), l.benchCPU.Seconds(), ms(max(0, l.writeLagAtClose)), l.relayP50*1000, l.relayP99*1000, l.load)
		tw.Flush()
	}
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
