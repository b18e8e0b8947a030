// Command bench is the outbox-relay benchmark suite (make bench). It starts
// a throwaway Postgres and a broker (kfake in this process, or with
// -broker apache one Apache Kafka node), writes outbox backlogs with fast
// SQL, and measures the relay binary against pg_recvlogical (pgoutput to
// /dev/null, the speed at which Postgres itself decodes the slot) on the
// same backlog in the same run. See docs/benchmarks.md for what each
// scenario means and the latest figures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	scenarios    []string
	n            int
	txRows       int
	payload      int
	hugeN        int
	rate         int
	latencyRows  int
	duration     time.Duration
	payloadSizes []int
	payloadN     int
	payloadMax   int
	loadConns    int
	relayArgs    []string
	profileDir   string
	keepLogs     bool
	relayFirst   bool
	runs         int
	relayBin     string
	baselineBin  string
	// baselineLabel names the baseline's rows, e.g. "naive" when
	// -baseline-bin is bench/naiverelay (see docs/benchmarks.md).
	baselineLabel string
	broker        string // brokerKfake or brokerApache
	brokerWarmup  time.Duration
	rates         []int // the latency scenario's rates: -rates, or -rate alone
	topicsN       int
	topicsCounts  []int // the topics scenario's topic counts: -topics-counts, or -topics-count alone
}

var allScenarios = []string{"drain", "huge", "latency", "latency15k", "payload", "topics", "incidents"}

// defaultScenarios run when -scenarios is not given: incidents restarts
// the suite's Postgres and topics (thousands of topics, deleted again on
// Apache Kafka) are asked for by name.
var defaultScenarios = []string{"drain", "huge", "latency", "latency15k", "payload"}

// latency15kRate is the latency15k scenario's rate: the latency scenario
// at three times the default -rate.
const latency15kRate = 15000

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	s, err := newSuite(ctx, o, stderr)
	if err != nil {
		return err
	}
	defer s.Close()

	fmt.Fprintln(stdout, machine())
	fmt.Fprintln(stdout, s.describeBroker())
	out := outcome{baseline: o.baselineBin != ""}
	for _, name := range o.scenarios {
		if err := s.runScenario(ctx, name, &out); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	printResults(stdout, out, s.brokerCPULabel())
	printIncidents(stdout, out.incidents, s.o)
	return nil
}

// outcome collects the rows of every scenario for the report.
type outcome struct {
	baseline  bool // -baseline-bin: each relay row has a baseline row
	backlogs  []result
	latencies []latencyResult
	topics    []topicsResult
	incidents []incidentResult
}

// runScenario runs the named scenario and adds its rows to out.
func (s *suite) runScenario(ctx context.Context, name string, out *outcome) error {
	o := s.o
	switch name {
	case "drain":
		r, err := s.backlogScenario(ctx, "drain", o.n, o.txRows, o.payload, o.profileDir)
		if err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		out.backlogs = append(out.backlogs, r)
	case "huge":
		r, err := s.backlogScenario(ctx, "huge", o.hugeN, o.hugeN, o.payload, "")
		if err != nil {
			return fmt.Errorf("huge transaction: %w", err)
		}
		out.backlogs = append(out.backlogs, r)
	case "latency", "latency15k":
		rates := o.rates
		if name == "latency15k" {
			rates = []int{latency15kRate}
		}
		for _, rate := range rates {
			for _, bin := range s.order() {
				l, err := s.latencyScenario(ctx, bin, rate, o.duration, s.profileFor(bin, o.profileDir))
				if err != nil {
					return fmt.Errorf("%s at %d events/s (%s): %w", name, rate, bin.label, err)
				}
				out.latencies = append(out.latencies, l)
			}
		}
	case "payload":
		for _, size := range o.payloadSizes {
			n := min(o.payloadN, max(1000, o.payloadMax/size))
			r, err := s.backlogScenario(ctx, "payload-"+byteSize(size), n, o.txRows, size, "")
			if err != nil {
				return fmt.Errorf("payload %d B: %w", size, err)
			}
			out.backlogs = append(out.backlogs, r)
		}
	case "topics":
		for _, count := range o.topicsCounts {
			r, err := s.topicsScenario(ctx, count)
			if err != nil {
				return fmt.Errorf("topics (%d): %w", count, err)
			}
			out.topics = append(out.topics, r)
		}
	case "incidents":
		r, err := s.incidentsScenario(ctx)
		if err != nil {
			return fmt.Errorf("incidents: %w", err)
		}
		out.incidents = append(out.incidents, r...)
	}
	return nil
}

// rawFlags are the flags parsed as text, before checks.
type rawFlags struct {
	scenarios, sizes, extra, rates, topicsCounts string
	topicsCount                                  int
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	var raw rawFlags
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&raw.scenarios, "scenarios", strings.Join(defaultScenarios, ","), "comma-separated scenarios: "+strings.Join(allScenarios, ", "))
	fs.IntVar(&o.n, "n", 500000, "backlog events for the drain scenario")
	fs.IntVar(&o.txRows, "tx-rows", 100, "rows per transaction in backlogs")
	fs.IntVar(&o.payload, "payload", 500, "payload bytes (jsonb text) for the drain, huge and topics scenarios")
	fs.IntVar(&o.hugeN, "huge-n", 500000, "rows in the single transaction of the huge scenario")
	fs.IntVar(&o.rate, "rate", 5000, "events/s written in the latency and incidents scenarios")
	fs.StringVar(&raw.rates, "rates", "", "comma-separated events/s for the latency scenario, one run each (replaces -rate there; e.g. 1000,5000,15000)")
	fs.IntVar(&o.latencyRows, "latency-tx-rows", 10, "rows per transaction in the latency and incidents scenarios")
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "how long each latency run writes")
	fs.StringVar(&raw.sizes, "payload-sizes", "100,1024,10240", "payload bytes for the payload scenario, comma-separated")
	fs.IntVar(&o.payloadN, "payload-n", 100000, "events per payload size")
	fs.IntVar(&o.payloadMax, "payload-max-bytes", 256<<20, "cap on events x payload per payload size (fewer events for large payloads)")
	fs.IntVar(&o.topicsN, "topics-n", 20000, "backlog events for the topics scenario")
	fs.IntVar(&raw.topicsCount, "topics-count", 2000, "aggregates, so topics, the topics scenario spreads its backlog over (outbox.event.{aggregate_id})")
	fs.StringVar(&raw.topicsCounts, "topics-counts", "", "comma-separated topic counts for the topics scenario, one backlog each (replaces -topics-count; e.g. 1,100,2000)")
	fs.IntVar(&o.loadConns, "load-conns", 2, "connections writing a backlog in parallel")
	fs.StringVar(&raw.extra, "relay-args", "", "extra flags for outbox-relay run, space-separated (e.g. --kafka-linger=2ms)")
	fs.StringVar(&o.profileDir, "profile", "", "directory for CPU profiles of the drain scenario (relay.pprof from the relay, bench.pprof from this process: with kfake, the broker) and of the latency runs (relay-latency.pprof; relay-latency-RATE.pprof at other rates)")
	fs.IntVar(&o.runs, "runs", 3, "drains of each backlog per reader (each from its own slot), runs of each incident; the tables show the median")
	fs.StringVar(&o.relayBin, "relay-bin", "", "an outbox-relay binary to measure instead of building ./cmd/outbox-relay (e.g. an older version)")
	fs.StringVar(&o.baselineBin, "baseline-bin", "", "a second outbox-relay binary (e.g. the previous release) measured in the same run: every relay run is made with both, alternating, and the tables print a baseline row beside each relay row")
	fs.StringVar(&o.baselineLabel, "baseline-label", "baseline", "the name of -baseline-bin's rows (letters, digits, - and _, at most 16), e.g. naive for bench/naiverelay")
	fs.BoolVar(&o.relayFirst, "relay-first", false, "reverse each run's order: the relay, then the baseline, then pg_recvlogical (default: pg_recvlogical, the baseline, the relay)")
	fs.BoolVar(&o.keepLogs, "keep-logs", false, "print where the relay's logs are and keep them")
	fs.StringVar(&o.broker, "broker", brokerKfake, "the Kafka the relay produces to: kfake (in this process) or apache (one Apache Kafka node, a JVM started once for the whole run; needs Java 17+)")
	fs.DurationVar(&o.brokerWarmup, "broker-warmup", 3*time.Minute, "with -broker apache: at most this long of unmeasured 15 s latency runs before the first scenario, until the JVM's JIT compilers use under 0.5 s of CPU in one (0: none)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	return o, o.check(raw)
}

// check fills the options parsed from text and refuses bad values.
func (o *options) check(raw rawFlags) error {
	for _, sc := range strings.Split(raw.scenarios, ",") {
		sc = strings.TrimSpace(sc)
		if sc == "" {
			continue
		}
		if !slices.Contains(allScenarios, sc) {
			return fmt.Errorf("unknown scenario %q: use %s", sc, strings.Join(allScenarios, ", "))
		}
		o.scenarios = append(o.scenarios, sc)
	}
	var err error
	if o.payloadSizes, err = parseInts("-payload-sizes", raw.sizes, 40, "a size of at least 40 bytes"); err != nil {
		return err
	}
	o.rates, o.topicsCounts = []int{o.rate}, []int{raw.topicsCount}
	if raw.rates != "" {
		if o.rates, err = parseInts("-rates", raw.rates, 1, "a positive rate in events/s"); err != nil {
			return err
		}
	}
	if raw.topicsCounts != "" {
		if o.topicsCounts, err = parseInts("-topics-counts", raw.topicsCounts, 1, "a positive topic count"); err != nil {
			return err
		}
	}
	if o.broker != brokerKfake && o.broker != brokerApache {
		return fmt.Errorf("-broker %q: use %s or %s", o.broker, brokerKfake, brokerApache)
	}
	if !validLabel(o.baselineLabel) || o.baselineLabel == "relay" {
		return fmt.Errorf("-baseline-label %q: use 1 to 16 letters, digits, - or _, other than relay (e.g. naive)", truncate(o.baselineLabel, 40))
	}
	if o.baselineLabel != "baseline" && o.baselineBin == "" {
		return fmt.Errorf("-baseline-label %q names -baseline-bin's rows: give -baseline-bin too", o.baselineLabel)
	}
	o.relayArgs = strings.Fields(raw.extra)
	if o.n < 1 || o.hugeN < 1 || o.txRows < 1 || o.rate < 1 || o.latencyRows < 1 || o.loadConns < 1 || o.runs < 1 || o.payload < 40 ||
		o.topicsN < 1 || raw.topicsCount < 1 {
		return errors.New("counts must be positive and -payload at least 40 bytes")
	}
	return nil
}

// parseInts parses a comma-separated list of integers of at least least;
// want says what each must be, for the error.
func parseInts(flagName, list string, least int, want string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < least {
			return nil, fmt.Errorf("%s: %q is not %s", flagName, truncate(f, 40), want)
		}
		out = append(out, v)
	}
	return out, nil
}

// truncate bounds text from the command line that goes into an error.
func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "..."
	}
	return s
}

func byteSize(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMB", n>>20)
	case n >= 1024 && n%1024 == 0:
		return fmt.Sprintf("%dKB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// validLabel keeps a row label one short word that prints as given: the
// tables are tab-aligned.
func validLabel(l string) bool {
	if l == "" || len(l) > 16 {
		return false
	}
	for _, r := range l {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
