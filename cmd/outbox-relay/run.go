package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	gometrics "github.com/rcrowley/go-metrics"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/outbox-relay/outbox-relay/admin"
	"github.com/outbox-relay/outbox-relay/internal/wire"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/sink"
)

// runFlags is the daemon's flag set, bound to a fresh options.
func runFlags() (*options, *flag.FlagSet) {
	o := newOptions()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	o.registerPG(fs)
	o.registerRun(fs)
	o.registerGap(fs)
	return o, fs
}

func runRelay(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, fs := runFlags()
	if err := parse(fs, o, args, getenv, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := o.finish(); err != nil {
		return err
	}
	logger, err := newLogger(o, stderr)
	if err != nil {
		return err
	}
	build := readBuildInfo()
	logger.Info().Str("version", build.Version).Str("commit", build.Commit).Str("go", build.Go).Str("sarama", build.Sarama).Msg("outbox-relay starting")
	keys, err := o.sealKeys()
	if err != nil {
		return err
	}
	// sarama records go-metrics (rcrowley) per request and per broker that
	// nothing here reads: the relay exports its own Prometheus metrics.
	// Turning them off saved 1-2% of the relay's CPU in a backlog drain
	// (docs/benchmarks.md).
	gometrics.UseNilMetrics = true
	o.pprofAddr = getenv(pprofEnv)
	for _, r := range []struct {
		env   string
		start func(io.Writer) error
		stop  func()
	}{
		{cpuProfileEnv, pprof.StartCPUProfile, pprof.StopCPUProfile},
		{traceEnv, trace.Start, trace.Stop},
	} {
		if path := getenv(r.env); path != "" {
			stop, err := recordTo(r.env, path, r.start, r.stop)
			if err != nil {
				return err
			}
			defer stop()
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerBuildInfo(reg, build)
	panics, _ := ctx.Value(panicsKey{}).(*sink.Panics)
	r, err := wire.Relay(wire.Config{Replication: o.pg, Sink: o.kafka, Relay: o.relay, AcceptGap: o.acceptGap, Panics: panics, Seal: keys}, logger, reg)
	if err != nil {
		return nameFields(err, o)
	}

	var retention *admin.Retention
	if o.retention.Prune.OlderThan > 0 {
		if len(o.pg.Outboxes) > 0 {
			return &outboxrelay.ConfigError{Problem: "--retention prunes one outbox table; the configuration lists more under outboxes:",
				Fix: "prune the other tables with outbox-relay prune (a cron job), or leave --retention off"}
		}
		o.retention.ConnString, o.retention.Prune.Table = o.pg.ConnString, o.pg.TableName()
		// Not while stalled: with Kafka down the rows may be the only copy
		// of events not yet delivered, and the slot may be lost meanwhile.
		active := func() bool { return r.State().Phase == relay.PhaseStreaming }
		if retention, err = admin.NewRetention(o.retention, active, logger, reg); err != nil {
			return err
		}
	}
	if keys != nil {
		logger.Info().Strs("key_ids", keys.IDs()).Msg("encrypting record values with AES-256-GCM under the first key id")
	}
	// Listen before starting anything, so a taken port fails cleanly.
	var ln net.Listener
	if o.metricsAddr != "" {
		if ln, err = net.Listen("tcp", o.metricsAddr); err != nil {
			return fmt.Errorf("listen on --metrics-addr %s: %w (pick a free address, or '' to disable)", o.metricsAddr, err)
		}
	}
	if err := serve(ctx, o, r, retention, ln, logger, reg); err != nil {
		err = withReplayCommand(err, o)
		logger.Error().Err(err).Msg("relay stopped")
		return err
	}
	logger.Info().Msg("relay stopped cleanly")
	return nil
}

// serve runs the relay, the slot monitor, the retention schedule when
// retention is not nil and, when ln is not nil, the HTTP endpoints, until
// ctx ends or one of them fails.
func serve(ctx context.Context, o *options, r *relay.Relay, retention *admin.Retention, ln net.Listener, logger zerolog.Logger, reg *prometheus.Registry) error {
	g, gctx := errgroup.WithContext(ctx)
	relayDone := make(chan struct{})
	g.Go(func() error {
		defer close(relayDone)
		return r.Run(gctx)
	})
	// The slot's lag is polled beside the relay, so it keeps reporting while
	// the relay is a standby, reconnecting or stuck. The relay returns only
	// once ctx ends or with an error, either of which ends gctx.
	monitor := admin.NewSlotMonitor(o.pg, max(o.pg.StatusInterval, time.Second), logger, reg)
	g.Go(func() error { return monitor.Run(gctx) })
	src := source{gather: reg, relay: r}
	if retention != nil {
		g.Go(func() error { return retention.Run(gctx) })
	}
	if o.pprofAddr != "" {
		g.Go(func() error { return servePprof(gctx, o.pprofAddr, logger) })
	}
	if o.progressInterval > 0 {
		p := progress{src: src, interval: o.progressInterval, log: logger.With().Str("component", "progress").Logger()}
		g.Go(func() error { return p.Run(gctx) })
	}
	if ln != nil {
		hist := newHistory(src, historyStep, historySpan)
		g.Go(func() error { return hist.Run(gctx) })
		mux := healthMux(r, reg)
		mux.Handle("GET /{$}", statusPage(src, hist, o.pg.Slot, readBuildInfo().String()))
		srv := &http.Server{Addr: o.metricsAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		logger.Info().Str("addr", ln.Addr().String()).Msg("serving /metrics, /healthz, /readyz and the status page at /")
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics server: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			// Keep answering /readyz until the relay has stopped.
			<-relayDone
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	return g.Wait()
}

// cpuProfileEnv names a file for a CPU profile of the whole run, written
// when the relay stops. It is a debugging aid (the benchmark suite uses it),
// so it is not a flag.
const cpuProfileEnv = "OUTBOX_RELAY_CPUPROFILE"

// pprofEnv names a loopback address (127.0.0.1:6060) to serve Go's
// profiles on (/debug/pprof/): a heap profile at the peak of a backlog
// drain shows what the in-flight events hold. Its own listener, never the
// metrics port (which a deployment exposes): goroutine dumps show the
// relay's internals and a CPU profile costs CPU for as long as asked.
const pprofEnv = "OUTBOX_RELAY_PPROF"

// servePprof serves the profiles on addr, a loopback address, until ctx
// ends.
func servePprof(ctx context.Context, addr string, logger zerolog.Logger) error {
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s=%q: use a loopback address such as 127.0.0.1:6060 (the profiles are not for the network)", pprofEnv, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: %w", pprofEnv, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", httppprof.Index)
	mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", httppprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	logger.Warn().Str("addr", ln.Addr().String()).Msg("serving Go profiles at /debug/pprof/ (" + pprofEnv + "); a debugging aid, not for production")
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// traceEnv names a file for a runtime execution trace of the whole run
// (go tool trace): where an event waited (scheduling, GC, blocking), which
// a CPU profile does not show. A debugging aid, like cpuProfileEnv.
const traceEnv = "OUTBOX_RELAY_TRACE"

// recordTo starts a recorder (a CPU profile, a trace) writing into the file
// named by env's value; stop ends it and closes the file.
func recordTo(env, path string, start func(io.Writer) error, stop func()) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create %s file: %w", env, err)
	}
	if err := start(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", env, err)
	}
	return func() {
		stop()
		f.Close()
	}, nil
}

func newLogger(o *options, stderr io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(o.logLevel)
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("--log-level: %w", err)
	}
	var w io.Writer = stderr
	if o.logFormat == "console" {
		w = zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.RFC3339}
	}
	logger := zerolog.New(w).Level(level).With().Timestamp().Logger()
	if level <= zerolog.DebugLevel {
		sarama.Logger = log.New(logger.With().Str("component", "sarama").Logger(), "", 0)
	}
	return logger, nil
}

func healthMux(r *relay.Relay, gatherer prometheus.Gatherer) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := r.State()
		if !st.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		if st.Detail != "" {
			fmt.Fprintf(w, "%s: %s\n", st.Phase, st.Detail)
			return
		}
		fmt.Fprintln(w, st.Phase)
	})
	return mux
}
