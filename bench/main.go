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
	broker       string // brokerKfake or brokerApache
	brokerWarmup time.Duration
}

var allScenarios = []string{"drain", "huge", "latency", "payload", "incidents"}

// defaultScenarios run when -scenarios is not given: incidents restarts
// the suite's Postgres and is asked for by name.
var defaultScenarios = []string{"drain", "huge", "latency", "payload"}

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
	var rows []result
	var lat []latencyResult
	var inc []incidentResult
	for _, name := range o.scenarios {
		switch name {
		case "drain":
			r, err := s.backlogScenario(ctx, "drain", o.n, o.txRows, o.payload, o.profileDir)
			if err != nil {
				return fmt.Errorf("drain: %w", err)
			}
			rows = append(rows, r)
		case "huge":
			r, err := s.backlogScenario(ctx, "huge", o.hugeN, o.hugeN, o.payload, "")
			if err != nil {
				return fmt.Errorf("huge transaction: %w", err)
			}
			rows = append(rows, r)
		case "latency":
			l, err := s.latencyScenario(ctx, o.duration, o.profileDir)
			if err != nil {
				return fmt.Errorf("latency: %w", err)
			}
			lat = append(lat, l)
		case "payload":
			for _, size := range o.payloadSizes {
				n := min(o.payloadN, max(1000, o.payloadMax/size))
				r, err := s.backlogScenario(ctx, "payload-"+byteSize(size), n, o.txRows, size, "")
				if err != nil {
					return fmt.Errorf("payload %d B: %w", size, err)
				}
				rows = append(rows, r)
			}
		case "incidents":
			r, err := s.incidentsScenario(ctx)
			if err != nil {
				return fmt.Errorf("incidents: %w", err)
			}
			inc = append(inc, r...)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	printResults(stdout, rows, lat, s.brokerCPULabel())
	printIncidents(stdout, inc, s.o)
	return nil
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scen := fs.String("scenarios", strings.Join(defaultScenarios, ","), "comma-separated scenarios: "+strings.Join(allScenarios, ", "))
	fs.IntVar(&o.n, "n", 500000, "backlog events for the drain scenario")
	fs.IntVar(&o.txRows, "tx-rows", 100, "rows per transaction in backlogs")
	fs.IntVar(&o.payload, "payload", 500, "payload bytes (jsonb text) for the drain and huge scenarios")
	fs.IntVar(&o.hugeN, "huge-n", 500000, "rows in the single transaction of the huge scenario")
	fs.IntVar(&o.rate, "rate", 5000, "events/s written in the latency and incidents scenarios")
	fs.IntVar(&o.latencyRows, "latency-tx-rows", 10, "rows per transaction in the latency and incidents scenarios")
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "how long the latency scenario writes")
	sizes := fs.String("payload-sizes", "100,1024,10240", "payload bytes for the payload scenario, comma-separated")
	fs.IntVar(&o.payloadN, "payload-n", 100000, "events per payload size")
	fs.IntVar(&o.payloadMax, "payload-max-bytes", 256<<20, "cap on events x payload per payload size (fewer events for large payloads)")
	fs.IntVar(&o.loadConns, "load-conns", 2, "connections writing a backlog in parallel")
	extra := fs.String("relay-args", "", "extra flags for outbox-relay run, space-separated (e.g. --kafka-linger=2ms)")
	fs.StringVar(&o.profileDir, "profile", "", "directory for CPU profiles of the drain scenario (relay.pprof from the relay, bench.pprof from this process: with kfake, the broker)")
	fs.IntVar(&o.runs, "runs", 3, "drains of each backlog per reader (each from its own slot), runs of each incident; the tables show the median")
	fs.StringVar(&o.relayBin, "relay-bin", "", "an outbox-relay binary to measure instead of building ./cmd/outbox-relay (e.g. an older version)")
	fs.BoolVar(&o.relayFirst, "relay-first", false, "drain with the relay before pg_recvlogical (default: pg_recvlogical first)")
	fs.BoolVar(&o.keepLogs, "keep-logs", false, "print where the relay's logs are and keep them")
	fs.StringVar(&o.broker, "broker", brokerKfake, "the Kafka the relay produces to: kfake (in this process) or apache (one Apache Kafka node, a JVM started once for the whole run; needs Java 17+)")
	fs.DurationVar(&o.brokerWarmup, "broker-warmup", 3*time.Minute, "with -broker apache: at most this long of unmeasured 15 s latency runs before the first scenario, until the JVM's JIT compilers use under 0.5 s of CPU in one (0: none)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for _, sc := range strings.Split(*scen, ",") {
		sc = strings.TrimSpace(sc)
		if sc == "" {
			continue
		}
		if !slices.Contains(allScenarios, sc) {
			return o, fmt.Errorf("unknown scenario %q: use %s", sc, strings.Join(allScenarios, ", "))
		}
		o.scenarios = append(o.scenarios, sc)
	}
	for _, f := range strings.Split(*sizes, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 40 {
			return o, fmt.Errorf("--payload-sizes: %q is not a size of at least 40 bytes", f)
		}
		o.payloadSizes = append(o.payloadSizes, v)
	}
	if o.broker != brokerKfake && o.broker != brokerApache {
		return o, fmt.Errorf("-broker %q: use %s or %s", o.broker, brokerKfake, brokerApache)
	}
	o.relayArgs = strings.Fields(*extra)
	if o.n < 1 || o.hugeN < 1 || o.txRows < 1 || o.rate < 1 || o.latencyRows < 1 || o.loadConns < 1 || o.runs < 1 || o.payload < 40 {
		return o, errors.New("counts must be positive and --payload at least 40 bytes")
	}
	return o, nil
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
