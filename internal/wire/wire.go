// Package wire is the one constructor of a relay. cmd/outbox-relay and
// every test harness build their relay here, so the tests run the product's
// wiring: the durable checkpoint record in front of each session's stream,
// the process-wide metrics, the validation of every config at start.
package wire

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/admin"
	"github.com/outbox-relay/outbox-relay/checkpoint"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/seal"
	"github.com/outbox-relay/outbox-relay/sink"
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
	// Seal, when not nil, encrypts every record value (--encryption-keys)
	// after routing, just before it is produced.
	Seal *seal.Keys
}

// Relay validates cfg and builds the relay the command runs: its sources
// and sinks come from Parts, its metrics register on reg (which may be nil).
func Relay(cfg Config, logger zerolog.Logger, reg prometheus.Registerer) (*relay.Relay, error) {
	newSource, newSink, err := Parts(cfg, logger, reg)
	if err != nil {
		return nil, err
	}
	return relay.New(cfg.Relay, newSource, newSink, relay.WithLogger(logger), relay.WithMetrics(relay.NewMetrics(reg)))
}

// Parts validates cfg and returns the per-session constructors Relay hands
// to relay.New: each source is a replication stream prepared by the
// process's admin.Sessions (preflight, setup, the publication watch) with
// the durable checkpoint record in front of each confirmation; each sink is
// a producer sharing the process's metrics. A test that must count or wrap
// sessions builds from these, so it still runs the product's parts.
func Parts(cfg Config, logger zerolog.Logger, reg prometheus.Registerer) (func() (relay.Source, error), func(relay.AckFunc) (relay.Sink, error), error) {
	// Validate both configs now, so a typo fails at start, not at connect.
	if err := cfg.Replication.Validate(); err != nil {
		return nil, nil, fmt.Errorf("replication config: %w", err)
	}
	if err := cfg.Sink.Validate(); err != nil {
		return nil, nil, fmt.Errorf("kafka config: %w", err)
	}
	repMetrics := replication.NewMetrics(reg)
	sinkMetrics := sink.NewMetrics(reg)
	keeper := checkpoint.NewKeeper(cfg.Replication.Slot, cfg.AcceptGap, logger, reg)
	sessions := admin.NewSessions(cfg.Replication, keeper, logger)
	newSource := func() (relay.Source, error) {
		return replication.New(cfg.Replication, sessions, replication.WithLogger(logger), replication.WithMetrics(repMetrics))
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
		var s relay.Sink
		var err error
		if cfg.Sink.Transactions.Enabled {
			s, err = sink.NewTxn(transactions(cfg, sessions.Server()), ack, opts...)
		} else {
			s, err = sink.New(cfg.Sink, ack, opts...)
		}
		if err != nil || cfg.Seal == nil {
			return s, err
		}
		return sealingSink{Sink: s, keys: cfg.Seal}, nil
	}
	return newSource, newSink, nil
}

// sealingSink encrypts each record value on its way into the producer.
// It wraps the sink rather than the session's produce path, so every
// record the relay sends, dead-letter copies included, leaves sealed:
// a copy of a record Kafka refused holds the sealed value and is sealed
// again with the same key and event id (open it twice).
type sealingSink struct {
	relay.Sink
	keys *seal.Keys
}

// Produce seals a copy of ev and produces it; see relay.Sink.
func (s sealingSink) Produce(ctx context.Context, ev *outboxrelay.Event, token uint64) error {
	sealed, err := s.keys.Event(ev)
	if err != nil {
		return err
	}
	return s.Sink.Produce(ctx, &sealed, token)
}

// transactions names this relay to Kafka for --exactly-once: by the
// database's system identifier and the slot, so a relay taking the slot
// over (a standby, or the next process) uses the same transactional.id and
// fences the one before it, and finds its position.
func transactions(cfg Config, srv admin.Server) sink.Config {
	sc := cfg.Sink
	tx := &sc.Transactions
	tx.Slot = cfg.Replication.Slot
	tx.PositionKey = srv.SystemID + "/" + cfg.Replication.Slot
	tx.Timeline, tx.WALEnd = srv.Timeline, srv.WALEnd
	if tx.ID == "" {
		tx.ID = "outbox-relay-" + srv.SystemID + "-" + cfg.Replication.Slot
	}
	return sc
}
