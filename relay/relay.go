package relay

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/checkpoint"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/route"
	"github.com/outbox-relay/outbox-relay/sink"
)

// Source is the replication stream as the relay uses it.
type Source interface {
	Run(ctx context.Context) error
	Messages() <-chan replication.Message
	Streaming() <-chan struct{}
	Confirm(lsn outboxrelay.LSN)
}

// Sink is the Kafka producer as the relay uses it.
type Sink interface {
	Run(ctx context.Context) error
	Ready() <-chan struct{}
	Produce(ctx context.Context, ev *outboxrelay.Event, token uint64) error
}

// AckFunc is how a Sink reports each event's fate; see sink.AckFunc.
type AckFunc = sink.AckFunc

// Config tunes the relay. Start from DefaultConfig: New refuses zero
// limits and timeouts rather than guessing them.
type Config struct {
	// MaxInFlight caps the events produced and not yet behind the
	// confirmed position; at the cap the WAL reader waits.
	MaxInFlight int
	// MaxInFlightBytes caps the same events by size (key, value and
	// headers), so large payloads cannot grow memory past it; 0 disables.
	MaxInFlightBytes int64
	// ShutdownTimeout bounds the wait for in-flight acks on shutdown.
	ShutdownTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait between failed sessions.
	BackoffMin, BackoffMax time.Duration
	// StandbyPoll is how often a standby tries to take the slot over.
	StandbyPoll time.Duration
	// StallTimeout marks the relay stalled (not ready) when events are in
	// flight and Kafka has acked none of them for this long.
	StallTimeout time.Duration
	// OnUndeliverable is Halt (also when empty) or DeadLetter.
	OnUndeliverable Undeliverable
	// DeadLetterTopic receives the copies of undeliverable events.
	DeadLetterTopic string
}

// DefaultConfig returns the defaults documented in outbox-relay run --help.
func DefaultConfig() Config {
	return Config{
		MaxInFlight:      10000,
		MaxInFlightBytes: 16 << 20,
		ShutdownTimeout:  30 * time.Second,
		BackoffMin:       500 * time.Millisecond,
		BackoffMax:       30 * time.Second,
		StandbyPoll:      2 * time.Second,
		StallTimeout:     30 * time.Second,
		OnUndeliverable:  Halt,
		DeadLetterTopic:  "outbox.dead-letter",
	}
}

// Option adjusts a Relay beyond its Config.
type Option func(*Relay)

// WithLogger sets the logger; the default discards.
func WithLogger(l zerolog.Logger) Option {
	return func(r *Relay) { r.log = l.With().Str("component", "relay").Logger() }
}

// WithMetrics makes the relay record into m.
func WithMetrics(m *Metrics) Option {
	return func(r *Relay) { r.metrics = m }
}

// Relay runs sessions until its context ends or a fatal error.
type Relay struct {
	cfg       Config
	newSource func() (Source, error)
	newSink   func(AckFunc) (Sink, error)
	log       zerolog.Logger
	metrics   *Metrics

	state   atomic.Pointer[State]
	problem atomic.Pointer[State] // the last state with a problem, for LastProblem
	tracker atomic.Pointer[checkpoint.Tracker]
	acks    atomic.Uint64 // acks seen, for the stall watch
}

// New validates cfg; newSource and newSink make one session's parts.
func New(cfg Config, newSource func() (Source, error), newSink func(AckFunc) (Sink, error), opts ...Option) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Relay{cfg: cfg, newSource: newSource, newSink: newSink, log: zerolog.Nop()}
	for _, o := range opts {
		o(r)
	}
	if r.metrics == nil {
		r.metrics = NewMetrics(nil)
	}
	r.metrics.observe(r)
	r.setState(PhaseStarting, "")
	return r, nil
}

// Validate reports every field of cfg the relay refuses, as
// *outboxrelay.FieldError values joined.
func (cfg Config) Validate() error {
	var errs []error
	field := func(name, format string, args ...any) {
		errs = append(errs, &outboxrelay.FieldError{Pkg: "relay", Field: name, Problem: fmt.Sprintf(format, args...)})
	}
	if cfg.MaxInFlight < 1 {
		field("MaxInFlight", "%d: use at least 1", cfg.MaxInFlight)
	}
	if cfg.MaxInFlightBytes < 0 {
		field("MaxInFlightBytes", "%d: use 0 (no byte cap) or more", cfg.MaxInFlightBytes)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"BackoffMin", cfg.BackoffMin}, {"StandbyPoll", cfg.StandbyPoll}, {"ShutdownTimeout", cfg.ShutdownTimeout}, {"StallTimeout", cfg.StallTimeout}} {
		if d.v <= 0 {
			field(d.name, "%s: must be positive", d.v)
		}
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		field("BackoffMax", "%s: must be at least BackoffMin (%s)", cfg.BackoffMax, cfg.BackoffMin)
	}
	switch cfg.OnUndeliverable {
	case "", Halt:
	case DeadLetter:
		if err := route.ValidTopic(cfg.DeadLetterTopic); err != nil {
			field("DeadLetterTopic", "%v", err)
		}
	default:
		field("OnUndeliverable", "%q: use %q or %q", cfg.OnUndeliverable, Halt, DeadLetter)
	}
	return errors.Join(errs...)
}

// Run streams until ctx ends (returning nil after a graceful shutdown) or a
// failure retrying cannot fix (returning it).
func (r *Relay) Run(ctx context.Context) error {
	backoff := r.cfg.BackoffMin
	standby := false
	for {
		started := time.Now()
		err := r.session(ctx)
		if ctx.Err() != nil {
			if isFatal(err) {
				// Found while stopping (the final status update's check):
				// it still needs a human.
				r.setState(PhaseStopped, err.Error())
				return err
			}
			r.setState(PhaseStopped, "")
			return nil
		}
		var wait time.Duration
		switch {
		case errors.Is(err, outboxrelay.ErrSlotActive), errors.Is(err, sink.ErrFenced):
			// Fenced: a relay with the same transactional.id took over.
			// Fencing it back would be a fight; wait as its standby.
			if !standby {
				r.log.Info().Err(err).Msg("slot held by another relay; waiting as hot standby")
			}
			standby = true
			r.setState(PhaseStandby, err.Error())
			wait = r.cfg.StandbyPoll
		case isFatal(err):
			r.setState(PhaseStopped, err.Error())
			return err
		default:
			standby = false
			if time.Since(started) > r.cfg.BackoffMax {
				backoff = r.cfg.BackoffMin // it worked for a while: a new incident
			}
			r.metrics.reconnects.Inc()
			r.log.Warn().Err(err).Dur("backoff", backoff).Msg("session ended; reconnecting from the slot's confirmed position")
			r.setState(PhaseReconnecting, err.Error())
			wait = backoff
			backoff = min(2*backoff, r.cfg.BackoffMax)
		}
		select {
		case <-ctx.Done():
			r.setState(PhaseStopped, "")
			return nil
		case <-time.After(wait):
		}
	}
}

// watch reports the session's phase: streaming once both sides are up, and
// stalled while events wait with no ack for StallTimeout (Kafka down: the
// producer retries in place, so nothing else would show it).
func (r *Relay) watch(ctx context.Context, src Source, snk Sink, tracker *checkpoint.Tracker) {
	for _, c := range []<-chan struct{}{src.Streaming(), snk.Ready()} {
		select {
		case <-c:
		case <-ctx.Done():
			return
		}
	}
	r.setState(PhaseStreaming, "")
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastAcks, since := r.acks.Load(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if acks := r.acks.Load(); acks != lastAcks || tracker.InFlight() == 0 {
				lastAcks, since = acks, now
				r.setState(PhaseStreaming, "")
			} else if now.Sub(since) >= r.cfg.StallTimeout {
				r.setState(PhaseStalled, fmt.Sprintf("no Kafka ack for over %s with events in flight; "+
					"the producer is retrying (outbox_relay_sink_retries_total)", r.cfg.StallTimeout))
			}
		}
	}
}
