// Package wire is the one constructor of a relay. cmd/outbox-relay and
// every test harness build their relay here, so the tests run the product's
// wiring: the durable checkpoint record in front of each session's stream,
// the process-wide metrics, the validation of every config at start.
package wire

import (
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/sink"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Config is everything a relay is built from.
type Config struct {
	Replication replication.Config
	Sink        sink.Config
	Relay       relay.Config
	// AcceptGap is the operator's --accept-gap: start past one reported gap.
	AcceptGap bool
	// Panics, when not nil, ends a session whose producer panicked inside
	// sarama; cmd sets sarama.PanicHandler to its Handle (a process global,
	// so tests leave it nil).
	Panics *sink.Panics
}

// Relay validates cfg and builds a relay; it connects to nothing. Each
// session gets a fresh stream (behind the checkpoint record) and producer,
// sharing the metrics registered on reg (which may be nil).
func Relay(cfg Config, logger zerolog.Logger, reg prometheus.Registerer) (*relay.Relay, error) {
	// Validate both configs now, so a typo fails at start, not at connect.
	if _, err := replication.New(cfg.Replication); err != nil {
		return nil, err
	}
	if _, err := sink.New(cfg.Sink, func(uint64, error) {}); err != nil {
		return nil, err
	}
	repMetrics := replication.NewMetrics(reg)
	sinkMetrics := sink.NewMetrics(reg)
	cp := replication.NewCheckpointer(cfg.Replication, cfg.AcceptGap, logger, reg)
	newSource := func() (relay.Source, error) {
		s, err := replication.New(cfg.Replication, replication.WithLogger(logger), replication.WithMetrics(repMetrics))
		if err != nil {
			return nil, err
		}
		return cp.Wrap(s), nil
	}
	// A relay that halts at an undeliverable event must not let the
	// events after it reach Kafka first.
	cfg.Sink.StopAtUndeliverable = cfg.Relay.OnUndeliverable != relay.DeadLetter
	// A missing topic ends the session; its wait (Config.TopicWait) runs
	// from its first failure across the sessions.
	missing := sink.NewMissingTopics()
	newSink := func(ack relay.AckFunc) (relay.Sink, error) {
		opts := []sink.Option{sink.WithLogger(logger), sink.WithMetrics(sinkMetrics), sink.WithMissingTopics(missing)}
		if cfg.Panics != nil {
			opts = append(opts, sink.WithPanics(cfg.Panics))
		}
		return sink.New(cfg.Sink, ack, opts...)
	}
	return relay.New(cfg.Relay, newSource, newSink, relay.WithLogger(logger), relay.WithMetrics(relay.NewMetrics(reg)))
}
