package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/sink"
)

// Undeliverable is what the relay does with an event that can never be
// delivered: a row the configuration cannot map (a NULL id or payload, a
// topic name Kafka would refuse) or a record Kafka refuses for good (too
// large, not authorized).
type Undeliverable string

const (
	// Halt stops the relay at the event without confirming it; the
	// operator fixes the cause or runs outbox-relay slot skip.
	Halt Undeliverable = "halt"
	// DeadLetter produces a copy of the event to Config.DeadLetterTopic
	// and moves on. The event counts as delivered once that copy is acked.
	DeadLetter Undeliverable = "dead-letter"
)

// Headers of a dead-letter record. The record's key is the event id (when
// known) and its value the original payload (when known and not the reason
// it was refused).
const (
	HeaderID            = "id" // the same header consumers dedupe on
	HeaderOriginalTopic = "original_topic"
	HeaderError         = "error"
	HeaderLSN           = "lsn"
)

// Dead-letter causes, the label values of outbox_relay_events_dead_lettered_total.
const (
	causeUnmappable = "unmappable"
	causeRefused    = "refused"
)

// refusal is an event Kafka refused for good, waiting for its dead-letter
// copy. token is the event's tracker token, which the copy inherits: the
// event is done when the copy is acked.
type refusal struct {
	token uint64
	de    *sink.DeliveryError
}

// deadLetters routes one session's undeliverable events to the dead-letter
// topic.
type deadLetters struct {
	topic   string
	metrics *Metrics
	fail    func(error)

	// copies maps the tokens of dead-letter records in flight to their
	// cause; pending mirrors its size so acks of ordinary events skip the
	// lock.
	pending atomic.Int64
	mu      sync.Mutex
	copies  map[uint64]string

	// refused holds Kafka refusals for run. Each in-flight event is refused
	// at most once per session, so the in-flight cap bounds it and the ack
	// path never blocks on it.
	refused chan refusal
}

func newDeadLetters(topic string, capacity int, m *Metrics, fail func(error)) *deadLetters {
	return &deadLetters{
		topic: topic, metrics: m, fail: fail,
		copies:  make(map[uint64]string),
		refused: make(chan refusal, capacity),
	}
}

// unmappable returns the dead-letter copy of an event the decoder could not
// map. Called by the feed goroutine, which tracks and produces the copy.
func (d *deadLetters) unmappable(ev *outboxrelay.Event, cause error) *outboxrelay.Event {
	return d.copyOf(ev.ID, ev.Topic, ev.LSN, ev, ev.Key, ev.Value, cause)
}

// track registers tok as a dead-letter copy before it is produced, so its
// ack is recognised.
func (d *deadLetters) track(tok uint64, cause string) {
	d.mu.Lock()
	d.copies[tok] = cause
	d.mu.Unlock()
	d.pending.Add(1)
}

// intercept sees every ack before the tracker does. It returns true when
// it took the ack over: a refusal queued for a dead-letter copy, or a
// failed copy (the session then fails). An acked copy is counted and left
// to the tracker like any event. Called from the sink's drain goroutine;
// it never blocks.
func (d *deadLetters) intercept(token uint64, err error) bool {
	if d.pending.Load() > 0 {
		d.mu.Lock()
		cause, isCopy := d.copies[token]
		if isCopy {
			delete(d.copies, token)
			d.pending.Add(-1)
		}
		d.mu.Unlock()
		if isCopy {
			if err == nil {
				d.metrics.deadLettered.WithLabelValues(cause).Inc()
				return false
			}
			d.fail(d.copyFailed(err))
			return true
		}
	}
	var de *sink.DeliveryError
	if err == nil || sink.IsRetriable(err) || !errors.As(err, &de) {
		return false
	}
	select {
	case d.refused <- refusal{token: token, de: de}:
	default:
		d.fail(fmt.Errorf("dead-letter queue full at %d refusals: %w", cap(d.refused), classifyDelivery(err)))
	}
	return true
}

// copyFailed says why a dead-letter copy failed: a retriable failure ends
// the session (the next one re-sends the event and copies it again); a
// refusal of the copy itself halts the relay.
func (d *deadLetters) copyFailed(err error) error {
	var de *sink.DeliveryError
	if !errors.As(err, &de) || sink.IsRetriable(err) {
		return fmt.Errorf("%w: dead-letter copy: %w", errKafka, err)
	}
	return &UndeliverableError{EventID: de.EventID, LSN: de.LSN, CommitLSN: de.CommitLSN,
		Err: fmt.Errorf("the dead-letter topic %q refused its copy too: %w (%s)", d.topic, de.Err, sink.Advice(de.Err))}
}

// run produces the dead-letter copies of Kafka refusals until ctx ends.
// It is a goroutine of its own because the feed goroutine may be blocked
// at the in-flight cap behind the very event that was refused.
func (d *deadLetters) run(ctx context.Context, snk Sink) {
	for {
		var r refusal
		select {
		case <-ctx.Done():
			return
		case r = <-d.refused:
		}
		value := r.de.Value
		if sink.IsTooLarge(r.de.Err) {
			value = nil // the copy would be refused for the same reason
		}
		ev := d.copyOf(r.de.EventID, r.de.Topic, r.de.LSN, nil, r.de.Key, value,
			fmt.Errorf("kafka refused it: %w", r.de.Err))
		ev.CommitLSN = r.de.CommitLSN // a refusal of the copy names its transaction
		d.track(r.token, causeRefused)
		if err := snk.Produce(ctx, ev, r.token); err != nil {
			if ctx.Err() == nil {
				d.fail(fmt.Errorf("%w: produce dead-letter copy: %w", errKafka, err))
			}
			return
		}
	}
}

// copyOf builds a dead-letter record. orig, when not nil, supplies the
// commit position and time; a refusal's copy is stamped now, since the sink
// reports no commit time with the refusal.
func (d *deadLetters) copyOf(id, topic string, lsn outboxrelay.LSN, orig *outboxrelay.Event, key, value []byte, cause error) *outboxrelay.Event {
	ev := &outboxrelay.Event{ID: id, Topic: d.topic, Value: value, LSN: lsn}
	if orig != nil {
		ev.CommitLSN, ev.CommitTime = orig.CommitLSN, orig.CommitTime
	} else {
		ev.CommitTime = time.Now()
	}
	if id != "" {
		ev.Key = []byte(id)
	} else if key != nil {
		ev.Key = key
	}
	ev.PartitionKey = ev.Key
	ev.Headers = []outboxrelay.Header{
		{Key: HeaderError, Value: []byte(cause.Error())},
		{Key: HeaderLSN, Value: []byte(lsn.String())},
	}
	if id != "" {
		ev.Headers = append(ev.Headers, outboxrelay.Header{Key: HeaderID, Value: []byte(id)})
	}
	if topic != "" {
		ev.Headers = append(ev.Headers, outboxrelay.Header{Key: HeaderOriginalTopic, Value: []byte(topic)})
	}
	return ev
}
