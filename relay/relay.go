package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/checkpoint"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/sink"
	"github.com/rs/zerolog"
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

// Config tunes the relay. Zero fields take DefaultConfig's values.
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
	tracker atomic.Pointer[checkpoint.Tracker]
	acks    atomic.Uint64 // acks seen, for the stall watch
}

// New validates cfg; newSource and newSink make one session's parts.
func New(cfg Config, newSource func() (Source, error), newSink func(AckFunc) (Sink, error), opts ...Option) (*Relay, error) {
	if cfg.MaxInFlight < 1 || cfg.MaxInFlightBytes < 0 {
		return nil, errors.New("relay: max in-flight must be at least 1, max in-flight bytes at least 0")
	}
	if cfg.BackoffMin <= 0 || cfg.BackoffMax < cfg.BackoffMin || cfg.StandbyPoll <= 0 || cfg.ShutdownTimeout <= 0 || cfg.StallTimeout <= 0 {
		return nil, errors.New("relay: backoff, standby poll, shutdown and stall timeouts must be positive, with backoff max >= min")
	}
	switch cfg.OnUndeliverable {
	case "", Halt:
	case DeadLetter:
		if err := replication.ValidTopic(cfg.DeadLetterTopic); err != nil {
			return nil, fmt.Errorf("relay: dead-letter topic: %w", err)
		}
	default:
		return nil, fmt.Errorf("relay: on-undeliverable %q: use %q or %q", cfg.OnUndeliverable, Halt, DeadLetter)
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

// Run streams until ctx ends (returning nil after a graceful shutdown) or a
// failure retrying cannot fix (returning it).
func (r *Relay) Run(ctx context.Context) error {
	backoff := r.cfg.BackoffMin
	standby := false
	for {
		started := time.Now()
		err := r.session(ctx)
		if ctx.Err() != nil {
			r.setState(PhaseStopped, "")
			return nil
		}
		var wait time.Duration
		switch {
		case errors.Is(err, replication.ErrSlotActive):
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

// errKafka marks session failures on the Kafka side, for logs and metrics.
var errKafka = errors.New("kafka")

// classifyDelivery turns a refusal Kafka will repeat forever into an
// UndeliverableError that names the event and the way past it.
func classifyDelivery(err error) error {
	var de *sink.DeliveryError
	if errors.As(err, &de) && !sink.IsRetriable(err) {
		return &UndeliverableError{EventID: de.EventID, LSN: de.LSN,
			Err: fmt.Errorf("kafka refused it for topic %q: %w (%s)", de.Topic, de.Err, sink.Advice(de.Err))}
	}
	return fmt.Errorf("%w: %w", errKafka, err)
}

// isFatal reports errors a reconnect cannot fix.
func isFatal(err error) bool {
	var ue *UndeliverableError
	return replication.IsConfigError(err) || errors.As(err, &ue)
}

// UndeliverableError stops the relay at an event it cannot deliver. The
// event stays in the slot; the operator fixes the cause or skips it.
type UndeliverableError struct {
	EventID string
	LSN     outboxrelay.LSN
	Err     error
}

func (e *UndeliverableError) Error() string {
	id := e.EventID
	if id == "" {
		id = "(no id)"
	}
	return fmt.Sprintf("event %s at LSN %s cannot be delivered: %v; the relay stopped without confirming it. "+
		"Fix the cause and restart, or move past it with: outbox-relay slot skip --event %s --yes", id, e.LSN, e.Err, id)
}

func (e *UndeliverableError) Unwrap() error { return e.Err }

// session runs one source and one sink until one fails or ctx ends.
func (r *Relay) session(ctx context.Context) error {
	tracker, err := checkpoint.New(r.cfg.MaxInFlight, r.cfg.MaxInFlightBytes)
	if err != nil {
		return err
	}
	r.tracker.Store(tracker)
	src, err := r.newSource()
	if err != nil {
		return err
	}

	feedCtx, stopFeed := context.WithCancel(ctx)
	defer stopFeed()
	// The first failure wins; the source, sink and ack goroutines report
	// concurrently.
	var failMu sync.Mutex
	var failure error
	fail := func(err error) {
		failMu.Lock()
		defer failMu.Unlock()
		if failure == nil {
			failure = err
			stopFeed()
		}
	}
	failed := func() error {
		failMu.Lock()
		defer failMu.Unlock()
		return failure
	}
	var dl *deadLetters
	if r.cfg.OnUndeliverable == DeadLetter {
		dl = newDeadLetters(r.cfg.DeadLetterTopic, r.cfg.MaxInFlight, r.metrics, fail)
	}
	ack := func(token uint64, err error) {
		if dl != nil && dl.intercept(token, err) {
			return
		}
		if err != nil {
			fail(classifyDelivery(err))
			return
		}
		if safe, moved := tracker.Done(checkpoint.Token(token)); moved {
			src.Confirm(safe)
		}
		r.acks.Add(1)
		r.metrics.acked.Inc()
	}
	snk, err := r.newSink(ack)
	if err != nil {
		return err
	}

	// The source and sink outlive ctx on purpose: on shutdown the relay
	// first drains acks, then stops the source (final status update), then
	// the sink.
	srcCtx, stopSrc := context.WithCancel(context.WithoutCancel(ctx))
	sinkCtx, stopSink := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSrc()
	defer stopSink()
	srcDone, sinkDone := make(chan error, 1), make(chan error, 1)
	go func() {
		err := src.Run(srcCtx)
		if err == nil && srcCtx.Err() == nil {
			err = errors.New("replication stream ended")
		}
		if err != nil {
			fail(err)
		}
		srcDone <- err
	}()
	go func() {
		err := snk.Run(sinkCtx)
		if err == nil && sinkCtx.Err() == nil {
			err = errors.New("producer stopped")
		}
		if err != nil {
			fail(fmt.Errorf("%w: %w", errKafka, err))
		}
		sinkDone <- err
	}()
	// Dead-letter copies of refusals are produced until in-flight acks are
	// drained, since a refused event is done only once its copy is acked.
	dlCtx, stopDL := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDL()
	dlDone := make(chan struct{})
	if dl != nil {
		go func() {
			defer close(dlDone)
			dl.run(dlCtx, snk)
		}()
	} else {
		close(dlDone)
	}
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		r.watch(feedCtx, src, snk, tracker)
	}()

	if err := r.feed(feedCtx, src, snk, tracker, dl); err != nil {
		fail(err)
	}
	stopFeed()
	<-watchDone

	shutdown := ctx.Err() != nil && failed() == nil
	if shutdown {
		r.drain(tracker)
	}
	stopDL()
	<-dlDone
	src.Confirm(tracker.Safe())
	stopSrc()
	<-srcDone
	stopSink()
	if shutdown {
		// Closing the producer waits for records sarama is still retrying,
		// which can take as long as Kafka stays down. The final status is
		// already sent; do not hold the exit hostage.
		select {
		case <-sinkDone:
		case <-time.After(r.cfg.ShutdownTimeout):
			r.log.Warn().Msg("producer still retrying at shutdown; exiting without waiting for it (unacked events are resent on restart)")
		}
	} else {
		// A reconnect must wait: an old producer still sending would race
		// the new session's resends and break per-aggregate order.
		<-sinkDone
	}
	r.tracker.Store(nil)
	if err := failed(); err != nil {
		r.metrics.failures(err)
		return err
	}
	return nil
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

// feed moves messages from the source to the sink in WAL order.
// Unmappable rows go to the dead-letter topic when dl is not nil.
func (r *Relay) feed(ctx context.Context, src Source, snk Sink, tracker *checkpoint.Tracker, dl *deadLetters) error {
	msgs := src.Messages()
	for {
		var m replication.Message
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case m, ok = <-msgs:
			if !ok {
				return nil
			}
		}
		switch m.Kind {
		case replication.KindEvent:
			ev := &m.Event
			if m.Err != nil {
				if dl == nil {
					return &UndeliverableError{EventID: m.Event.ID, LSN: m.Event.LSN, Err: m.Err}
				}
				ev = dl.unmappable(&m.Event, m.Err)
			}
			r.metrics.received.WithLabelValues(m.Event.Topic).Inc()
			tok, err := tracker.Track(ctx, eventSize(ev))
			if err != nil {
				return nil // ctx ended
			}
			if m.Err != nil {
				dl.track(uint64(tok), causeUnmappable)
			}
			if err := snk.Produce(ctx, ev, uint64(tok)); err != nil {
				// Never handed over, so no ack will come for it.
				tracker.Untrack(tok)
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("%w: produce: %w", errKafka, err)
			}
		case replication.KindCommit, replication.KindKeepalive:
			if safe, moved := tracker.Mark(m.LSN); moved {
				src.Confirm(safe)
			}
		}
	}
}

// eventSize is what an event holds in memory until acked, near enough for a cap.
func eventSize(ev *outboxrelay.Event) int {
	n := len(ev.Key) + len(ev.Value) + len(ev.Topic)
	for _, h := range ev.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// drain waits for in-flight acks, bounded by ShutdownTimeout.
func (r *Relay) drain(tracker *checkpoint.Tracker) {
	deadline := time.Now().Add(r.cfg.ShutdownTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for tracker.InFlight() > 0 {
		if time.Now().After(deadline) {
			r.log.Warn().Int("in_flight", tracker.InFlight()).Msg("shutdown timeout: unacked events will be resent on restart")
			return
		}
		<-tick.C
	}
}
