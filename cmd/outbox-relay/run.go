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
	"time"

	"github.com/IBM/sarama"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/sink"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

func runRelay(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o := newOptions()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	o.registerPG(fs)
	o.registerRun(fs)
	if err := parse(fs, o, args, getenv, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := o.finish(); err != nil {
		return err
	}
	if len(o.kafka.Brokers) == 0 {
		return errors.New("--kafka-brokers is required (or OUTBOX_RELAY_KAFKA_BROKERS)")
	}
	logger, err := newLogger(o, stderr)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r, err := newRelay(o, logger, reg)
	if err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	relayDone := make(chan struct{})
	g.Go(func() error {
		defer close(relayDone)
		return r.Run(gctx)
	})
	if o.metricsAddr != "" {
		srv := &http.Server{Addr: o.metricsAddr, Handler: healthMux(r, reg), ReadHeaderTimeout: 5 * time.Second}
		ln, err := net.Listen("tcp", o.metricsAddr)
		if err != nil {
			return fmt.Errorf("listen on --metrics-addr %s: %w", o.metricsAddr, err)
		}
		logger.Info().Str("addr", ln.Addr().String()).Msg("serving /metrics, /healthz, /readyz")
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
	if err := g.Wait(); err != nil {
		logger.Error().Err(err).Msg("relay stopped")
		return err
	}
	logger.Info().Msg("relay stopped cleanly")
	return nil
}

// newRelay wires one relay: each session gets a fresh stream and producer,
// sharing the process-wide metrics.
func newRelay(o *options, logger zerolog.Logger, reg prometheus.Registerer) (*relay.Relay, error) {
	repMetrics := replication.NewMetrics(reg)
	sinkMetrics := sink.NewMetrics(reg)
	// Validate both configs now, so a typo fails at start, not at connect.
	if _, err := replication.New(o.pg); err != nil {
		return nil, err
	}
	if _, err := sink.New(o.kafka, func(uint64, error) {}); err != nil {
		return nil, err
	}
	newSource := func() (relay.Source, error) {
		return replication.New(o.pg, replication.WithLogger(logger), replication.WithMetrics(repMetrics))
	}
	newSink := func(ack relay.AckFunc) (relay.Sink, error) {
		return sink.New(o.kafka, ack, sink.WithLogger(logger), sink.WithMetrics(sinkMetrics))
	}
	return relay.New(o.relay, newSource, newSink, relay.WithLogger(logger), relay.WithMetrics(relay.NewMetrics(reg)))
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
