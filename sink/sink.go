package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/rs/zerolog"
)

// AckFunc learns the fate of each produced event: err is nil once Kafka has
// acked it, or a *DeliveryError. It runs on the goroutine draining the
// producer, so it must return quickly and never block.
type AckFunc func(token uint64, err error)

// ErrClosed is returned by Produce once Run is shutting down.
var ErrClosed = errors.New("sink is closed")

// delivery rides along with each record.
type delivery struct {
	token        uint64
	id           string
	lsn          outboxrelay.LSN
	partitionKey []byte
	commitTime   time.Time
}

// Sink is one Kafka producer session. Run may be called once.
type Sink struct {
	cfg     *sarama.Config
	brokers []string
	onAck   AckFunc
	log     zerolog.Logger
	metrics *Metrics

	ready    chan struct{} // closed once the producer exists
	closing  chan struct{} // closed when Run begins shutting down
	stopped  chan struct{} // closed when Run returns
	mu       sync.RWMutex  // Produce holds R while sending; shutdown takes W
	producer sarama.AsyncProducer
	closed   bool

	lastRetryLog atomic.Int64 // unix nanos; retries are logged once per 10 s
}

// New validates cfg and returns a Sink; it connects to nothing.
func New(cfg Config, onAck AckFunc, opts ...Option) (*Sink, error) {
	if onAck == nil {
		return nil, errors.New("sink: an AckFunc is required")
	}
	sc, err := cfg.saramaConfig()
	if err != nil {
		return nil, err
	}
	s := &Sink{
		cfg: sc, brokers: cfg.Brokers, onAck: onAck, log: zerolog.Nop(),
		ready: make(chan struct{}), closing: make(chan struct{}), stopped: make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	base, ceiling := cfg.RetryBackoff, cfg.RetryBackoffMax
	sc.Producer.Retry.BackoffFunc = func(retries, _ int) time.Duration {
		// Runs on sarama's goroutines for each retry of a batch: the only
		// sign of a Kafka outage while retries hold the partition in order.
		s.metrics.retries.Inc()
		now := time.Now().UnixNano()
		if last := s.lastRetryLog.Load(); now-last > int64(10*time.Second) && s.lastRetryLog.CompareAndSwap(last, now) {
			s.log.Warn().Int("retries", retries).Msg("kafka produce failing; retrying in order, the slot is not confirmed past it")
		}
		return min(base<<min(retries-1, 16), ceiling)
	}
	return s, nil
}

// Ready is closed once the producer is connected.
func (s *Sink) Ready() <-chan struct{} { return s.ready }

// Run connects the producer and reports every ack through the AckFunc
// until ctx ends. It then closes the producer, still reporting the acks and
// errors of records already handed over, and returns nil. It returns an
// error if the brokers cannot be reached.
func (s *Sink) Run(ctx context.Context) error {
	defer close(s.stopped)
	p, err := sarama.NewAsyncProducer(s.brokers, s.cfg)
	if err != nil {
		return fmt.Errorf("connect to kafka %v: %w", s.brokers, err)
	}
	s.producer = p
	close(s.ready)

	successes, errs := p.Successes(), p.Errors()
	closing := ctx.Done()
	for successes != nil || errs != nil {
		select {
		case m, ok := <-successes:
			if !ok {
				successes = nil
				continue
			}
			d := m.Metadata.(*delivery)
			s.metrics.acked.WithLabelValues(m.Topic).Inc()
			s.metrics.latency.Observe(time.Since(d.commitTime).Seconds())
			s.onAck(d.token, nil)
		case pe, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			d := pe.Msg.Metadata.(*delivery)
			kind := "retriable"
			if !IsRetriable(pe.Err) {
				kind = "undeliverable"
			}
			s.metrics.errors.WithLabelValues(kind).Inc()
			s.onAck(d.token, &DeliveryError{EventID: d.id, Topic: pe.Msg.Topic, LSN: d.lsn, Err: pe.Err,
				Key: encoded(pe.Msg.Key), Value: encoded(pe.Msg.Value)})
		case <-closing:
			closing = nil
			close(s.closing)
			// Off this goroutine: a Produce holding the read lock may be
			// waiting for sarama, which waits for this loop to drain acks.
			go func() {
				s.mu.Lock()
				s.closed = true
				s.mu.Unlock()
				p.AsyncClose()
			}()
		}
	}
	return nil
}

// Produce hands ev to the producer. It blocks while the producer's buffer is
// full, until ctx ends, or until Run stops. The token comes back through
// the AckFunc. Call it from one goroutine, in WAL order: records keep their
// order only among one goroutine's calls. A second goroutine may produce to
// other topics concurrently (the relay's dead-letter copies do).
func (s *Sink) Produce(ctx context.Context, ev *outboxrelay.Event, token uint64) error {
	select {
	case <-s.ready:
	case <-s.stopped:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	msg := NewRecord(ev, token)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	select {
	case s.producer.Input() <- msg:
		s.metrics.produced.WithLabelValues(ev.Topic).Inc()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closing:
		return ErrClosed
	}
}

// NewRecord builds the record Produce hands to sarama; token comes back
// through the AckFunc. It is exported for the per-event benchmark
// (relay/bench_test.go). The record shares ev's byte slices.
func NewRecord(ev *outboxrelay.Event, token uint64) *sarama.ProducerMessage {
	// One allocation for the message, its metadata, key and value encoders
	// and the headers the decoder always sets; one more for the header
	// keys. Per-event allocations are most of the relay's GC work.
	r := &record{
		key: sarama.ByteEncoder(ev.Key), value: sarama.ByteEncoder(ev.Value),
		delivery: delivery{
			token: token, id: ev.ID, lsn: ev.LSN,
			partitionKey: ev.PartitionKey, commitTime: ev.CommitTime,
		},
	}
	r.msg = sarama.ProducerMessage{
		Topic:     ev.Topic,
		Key:       &r.key,
		Value:     &r.value,
		Timestamp: ev.CommitTime,
		Metadata:  &r.delivery,
	}
	if ev.Key == nil {
		r.msg.Key = nil
	}
	if len(ev.Headers) > 0 {
		hs := r.headers[:0]
		size := 0
		for _, h := range ev.Headers {
			size += len(h.Key)
		}
		keys := make([]byte, 0, size)
		for _, h := range ev.Headers {
			keys = append(keys, h.Key...)
			hs = append(hs, sarama.RecordHeader{Key: keys[len(keys)-len(h.Key) : len(keys) : len(keys)], Value: h.Value})
		}
		r.msg.Headers = hs
	}
	return &r.msg
}

// record is what NewRecord allocates for one event.
type record struct {
	msg        sarama.ProducerMessage
	delivery   delivery
	key, value sarama.ByteEncoder
	headers    [4]sarama.RecordHeader
}

// encoded returns the bytes Produce put in a record field.
func encoded(e sarama.Encoder) []byte {
	if e == nil {
		return nil
	}
	b, _ := e.Encode() // ByteEncoder never fails
	return b
}
