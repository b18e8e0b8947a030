package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/checkpoint"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/sink"
)

// session is one attempt: a stream from the slot's confirmed position, a
// producer started once that stream is live, and the tracker between them.
type session struct {
	r        *Relay
	tracker  *checkpoint.Tracker
	src      Source
	snk      Sink
	dl       *deadLetters
	stopFeed context.CancelFunc

	stopSrc  func()
	srcDone  <-chan struct{}
	stopSink func()
	sinkDone <-chan struct{} // nil until the sink runs
	stopDL   func()
	dlDone   <-chan struct{} // nil until the dead-letter producer runs
	shutdown bool            // ctx ended with no failure: drain, bounded waits

	mu      sync.Mutex
	failure error
}

// session runs one source and one sink until one fails or ctx ends.
func (r *Relay) session(ctx context.Context) error {
	tracker, err := checkpoint.New(r.cfg.MaxInFlight, r.cfg.MaxInFlightBytes)
	if err != nil {
		return err
	}
	src, err := r.newSource()
	if err != nil {
		return err
	}
	r.tracker.Store(tracker)
	defer r.tracker.Store(nil)
	s := &session{r: r, tracker: tracker, src: src}
	if r.cfg.OnUndeliverable == DeadLetter {
		s.dl = newDeadLetters(r.cfg.DeadLetterTopic, r.cfg.MaxInFlight, r.metrics, s.fail)
	}
	if err := s.run(ctx); err != nil {
		r.metrics.failures(err)
		return err
	}
	return nil
}

// run starts the source, then the producer once the stream is live (a hot
// standby's source fails at once, and a producer per poll would bootstrap
// Kafka thousands of times a day), moves events until a failure or ctx
// ends, and stops everything in order.
func (s *session) run(ctx context.Context) error {
	feedCtx, stopFeed := context.WithCancel(ctx)
	defer stopFeed()
	s.stopFeed = stopFeed
	// The source and sink outlive ctx on purpose: see stopInOrder.
	srcCtx, stopSrc := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSrc()
	s.stopSrc = stopSrc
	s.srcDone = s.goRun(srcCtx, s.src.Run, func(err error) error {
		if err == nil {
			return errors.New("replication stream ended")
		}
		return err
	})
	select {
	case <-s.src.Streaming():
		if feedCtx.Err() == nil && s.startSink(ctx) {
			s.startDeadLetters(ctx)
			s.pump(feedCtx)
		}
	case <-s.srcDone:
	case <-feedCtx.Done():
	}
	s.stopInOrder(ctx)
	return s.failed()
}

// stopInOrder is the session's shutdown order. On a graceful stop (ctx
// ended, nothing failed) it first waits for in-flight acks; then it stops
// the dead-letter copies (a refused event is done only once its copy is
// acked), confirms the tracker's safe position, stops the source (which
// sends it in a final status update), and stops the producer last, so no
// ack that the final status could carry is cut off.
func (s *session) stopInOrder(ctx context.Context) {
	s.stopFeed()
	if ctx.Err() != nil && s.failed() == nil && s.sinkDone != nil {
		s.shutdown = true
		s.drain()
	}
	if s.dlDone != nil {
		s.stopDL()
		<-s.dlDone
	}
	s.src.Confirm(s.tracker.Safe())
	s.stopSrc()
	<-s.srcDone
	s.stopProducer()
}

// goRun runs part on its own goroutine; a return before its ctx ends fails
// the session with wrap(err). The channel closes when part returns.
func (s *session) goRun(ctx context.Context, part func(context.Context) error, wrap func(error) error) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := part(ctx); err != nil || ctx.Err() == nil {
			s.fail(wrap(err))
		}
	}()
	return done
}

// startSink builds the producer and runs it.
func (s *session) startSink(ctx context.Context) bool {
	snk, err := s.r.newSink(s.ack)
	if err != nil {
		s.fail(err)
		return false
	}
	s.snk = snk
	sinkCtx, stopSink := context.WithCancel(context.WithoutCancel(ctx))
	s.stopSink = stopSink
	s.sinkDone = s.goRun(sinkCtx, snk.Run, func(err error) error {
		if err == nil {
			err = errors.New("producer stopped")
		}
		// The exactly-once producer ends its Run at a refused record
		// rather than reporting it through the AckFunc.
		return classifyDelivery(err)
	})
	return true
}

// startDeadLetters runs the dead-letter producer, when there is one, until
// stopInOrder stops it.
func (s *session) startDeadLetters(ctx context.Context) {
	if s.dl == nil {
		return
	}
	dlCtx, stopDL := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.dl.run(dlCtx, s.snk)
	}()
	s.stopDL, s.dlDone = stopDL, done
}

// pump moves events until the feed stops, with the phase watch beside it.
func (s *session) pump(feedCtx context.Context) {
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		s.r.watch(feedCtx, s.src, s.snk, s.tracker)
	}()
	err := s.feed(feedCtx)
	s.stopFeed()
	<-watchDone
	if err != nil && !errors.Is(err, errSinkClosed) {
		s.fail(err)
	}
}

// stopProducer stops the sink after the source has sent its last status.
func (s *session) stopProducer() {
	if s.sinkDone == nil {
		return
	}
	s.stopSink()
	if !s.shutdown {
		// A reconnect must wait: an old producer still sending would race
		// the new session's resends and break per-aggregate order.
		<-s.sinkDone
		return
	}
	// Closing the producer waits for records sarama is still retrying,
	// which can take as long as Kafka stays down. The final status is
	// already sent; do not hold the exit hostage.
	select {
	case <-s.sinkDone:
	case <-time.After(s.r.cfg.ShutdownTimeout):
		s.r.log.Warn().Msg("producer still retrying at shutdown; exiting without waiting for it (unacked events are resent on restart)")
	}
}

// fail records the session's first failure and stops the feed; the source,
// sink and ack goroutines report concurrently.
func (s *session) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failure == nil {
		s.failure = err
		s.stopFeed()
	}
}

func (s *session) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failure
}

// ack is the sink's AckFunc: it runs on the sink's drain goroutine.
func (s *session) ack(token uint64, err error) {
	if s.dl != nil && s.dl.intercept(token, err) {
		return
	}
	if err != nil {
		s.fail(classifyDelivery(err))
		return
	}
	if safe, moved := s.tracker.Done(checkpoint.Token(token)); moved {
		s.src.Confirm(safe)
	}
	s.r.acks.Add(1)
	s.r.metrics.acked.Inc()
}

// feed moves messages from the source to the sink in WAL order.
func (s *session) feed(ctx context.Context) error {
	msgs := s.src.Messages()
	for {
		var m replication.Message
		var ok bool
		// A waiting message is taken without the two-channel select
		// (which locks both); ctx is checked after each message instead.
		select {
		case m, ok = <-msgs:
		default:
			select {
			case <-ctx.Done():
				return nil
			case m, ok = <-msgs:
			}
		}
		if !ok {
			return nil
		}
		switch m.Kind {
		case replication.KindEvent:
			if err := s.forward(ctx, &m); err != nil || ctx.Err() != nil {
				return err
			}
		case replication.KindCommit, replication.KindKeepalive:
			if safe, moved := s.tracker.Mark(m.LSN); moved {
				s.src.Confirm(safe)
			}
			if ctx.Err() != nil {
				return nil
			}
		}
	}
}

// forward tracks and produces one event; unmappable rows go to the
// dead-letter topic when there is one.
func (s *session) forward(ctx context.Context, m *replication.Message) error {
	ev := &m.Event
	if m.Err != nil {
		if s.dl == nil {
			return &UndeliverableError{EventID: ev.ID, LSN: ev.LSN, CommitLSN: ev.CommitLSN, Err: m.Err}
		}
		ev = s.dl.unmappable(&m.Event, m.Err)
	}
	s.r.metrics.receivedBy(m.Event.Topic)
	tok, err := s.tracker.Track(ctx, eventSize(ev))
	if err != nil {
		return nil // ctx ended
	}
	if m.Err != nil {
		s.dl.track(uint64(tok), causeUnmappable)
	}
	if err := s.snk.Produce(ctx, ev, uint64(tok)); err != nil {
		// Never handed over, so no ack will come for it.
		s.tracker.Untrack(tok)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, sink.ErrClosed) {
			// The sink stopped on its own: its Run ends the session with
			// the reason (a TLS failure, say), which "closed" would hide
			// when it won the race to be the session's failure.
			return errSinkClosed
		}
		return classifyDelivery(fmt.Errorf("produce: %w", err))
	}
	return nil
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
func (s *session) drain() {
	deadline := time.Now().Add(s.r.cfg.ShutdownTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.tracker.InFlight() > 0 {
		if time.Now().After(deadline) {
			s.r.log.Warn().Int("in_flight", s.tracker.InFlight()).Msg("shutdown timeout: unacked events will be resent on restart")
			return
		}
		<-tick.C
	}
}
