package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
			s.onAck(d.token, &DeliveryError{EventID: d.id, Topic: pe.Msg.Topic, LSN: d.lsn, Err: pe.Err})
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
// the AckFunc. Call it from one goroutine, in WAL order.
func (s *Sink) Produce(ctx context.Context, ev *outboxrelay.Event, token uint64) error {
	select {
	case <-s.ready:
	case <-s.stopped:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	msg := &sarama.ProducerMessage{
		Topic:     ev.Topic,
		Key:       sarama.ByteEncoder(ev.Key),
		Value:     sarama.ByteEncoder(ev.Value),
		Timestamp: ev.CommitTime,
		Metadata: &delivery{
			token: token, id: ev.ID, lsn: ev.LSN,
			partitionKey: ev.PartitionKey, commitTime: ev.CommitTime,
		},
	}
	if ev.Key == nil {
		msg.Key = nil
	}
	if len(ev.Headers) > 0 {
		msg.Headers = make([]sarama.RecordHeader, len(ev.Headers))
		for i, h := range ev.Headers {
			msg.Headers[i] = sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value}
		}
	}
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
