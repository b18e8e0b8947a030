package sink

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// AckFunc learns the fate of each produced event: err is nil once Kafka has
// acked it, or a *DeliveryError. It runs on the goroutine draining the
// producer, so it must return quickly and never block.
type AckFunc func(token uint64, err error)

// delivery rides along with each record.
type delivery struct {
	token        uint64
	id           string
	lsn          outboxrelay.LSN
	commitLSN    outboxrelay.LSN
	partitionKey []byte
	commitTime   time.Time
}

// Sink is one Kafka producer session. Run may be called once.
//
// Isolation. Kafka accepts or refuses a partition's batch as one, and
// sarama fails every record of a refused batch with the broker's error
// (MESSAGE_TOO_LARGE against the topic's max.message.bytes, which bounds
// the whole batch; INVALID_RECORD for one bad record among good ones;
// CORRUPT_MESSAGE once sarama's retries are spent). So such a refusal
// (see refusedByBroker; an unknown or forbidden topic is not one) of a
// batching producer is not taken as final: the sink stops that producer
// writing at once (its gate), before sarama can send the partition's
// later records, and holds every record the producer then fails. It
// resends them, in the order they were produced, through producers that
// put half as many records in a request as the batch refused before, down
// to one (see isolate), reports each one's fate (so only a record Kafka
// refuses alone is reported undeliverable, named by its own event), and
// goes on with a new batching producer. If no record was refused alone,
// the batches were too large only together, and every later producer puts
// no more records in a request than got through. Produce waits meanwhile.
// Records acked before the refusal are not resent.
type Sink struct {
	cfg     *sarama.Config // each producer gets a copy with its own gate
	brokers []string
	onAck   AckFunc
	log     zerolog.Logger
	metrics *Metrics
	panics  *Panics
	// backoff and backoffMax bound the wait between retries of a batch.
	backoff, backoffMax time.Duration

	ready   chan struct{}    // closed once the first producer exists
	closing chan struct{}    // closed when Run begins shutting down
	stopped chan struct{}    // closed when Run returns
	panicCh chan *PanicError // the first panic recovered for this sink

	// Produce holds mu's R while handing a record over; switching producers
	// and shutting down take W, so no record is sent to a closed producer.
	mu       sync.RWMutex
	producer sarama.AsyncProducer // nil while a refused batch is resent
	resumed  chan struct{}        // closed once producer is set again
	retiring chan struct{}        // closed to make Produce let go of producer
	closed   bool

	stopAtUndeliverable bool // Config.StopAtUndeliverable

	// maxRecords caps the records per request of the batching producers
	// once refusals showed larger batches do not fit (0: no cap). Run's
	// goroutine only.
	maxRecords int
	// topicFailures names what sarama's circuit breaker stands for.
	topicFailures topicFailures
	// missing and topicWait make a missing topic retriable for a while
	// (Config.TopicWait).
	missing   *MissingTopics
	topicWait time.Duration

	lastRetryLog atomic.Int64 // unix nanos; retries are logged once per 10 s

	// testHookError, set by tests before Run, runs on the drain goroutine
	// as soon as it receives an error, before it handles it.
	testHookError func(*sarama.ProducerError)
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
		backoff: cfg.RetryBackoff, backoffMax: cfg.RetryBackoffMax, stopAtUndeliverable: cfg.StopAtUndeliverable,
		ready: make(chan struct{}), closing: make(chan struct{}), stopped: make(chan struct{}),
		panicCh: make(chan *PanicError, 1),
		resumed: make(chan struct{}), retiring: make(chan struct{}),
		topicFailures: topicFailures{}, topicWait: cfg.TopicWait,
	}
	for _, o := range opts {
		o(s)
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	if s.missing == nil {
		s.missing = NewMissingTopics()
	}
	sc.Producer.Partitioner = func(string) sarama.Partitioner { return partitioner{s} }
	return s, nil
}

// retryWait runs on sarama's goroutines for each retry of a batch (and for
// a new record that finds no leader): the only sign of a Kafka outage
// while retries hold the partition in order.
func (s *Sink) retryWait(g *gate, retries int) time.Duration {
	defer s.recoverPanic(nil)
	if g.isClosed() {
		return 0 // nothing can be sent any more: let sarama fail the rest fast
	}
	s.metrics.retries.Inc()
	now := time.Now().UnixNano()
	if last := s.lastRetryLog.Load(); now-last > int64(10*time.Second) && s.lastRetryLog.CompareAndSwap(last, now) {
		s.log.Warn().Int("retries", retries).Msg("kafka produce failing; retrying in order, the slot is not confirmed past it")
	}
	return retryBackoff(retries, s.backoff, s.backoffMax)
}

// Ready is closed once the producer is connected.
func (s *Sink) Ready() <-chan struct{} { return s.ready }

// Run connects the producer and reports every ack through the AckFunc
// until ctx ends. It then closes the producer, still reporting the acks and
// errors of records already handed over, and returns nil. It returns an
// error if the brokers cannot be reached, or a *PanicError once a panic
// was recovered on the producer's goroutines (it then waits at most the
// configured Timeout for the producer to close, and sends nothing more).
func (s *Sink) Run(ctx context.Context) error {
	defer close(s.stopped)
	if s.cfg.Net.SASL.Enable && s.cfg.Net.SASL.Mechanism == sarama.SASLTypePlaintext && !s.cfg.Net.TLS.Enable {
		s.log.Warn().Msg("SASL PLAIN without TLS: the Kafka password crosses the network in clear text; enable TLS.Enabled (--kafka-tls)")
	}
	pr, err := s.connect(s.maxRecords, false)
	if err != nil {
		return err
	}
	if s.panics != nil {
		s.panics.add(s)
		defer s.panics.remove(s)
	}
	s.use(pr.p)
	close(s.ready)
	for {
		held, err := s.drain(ctx, pr)
		if err != nil || len(held) == 0 {
			return err
		}
		if pr, err = s.isolate(ctx, held, pr); err != nil || pr == nil {
			return err
		}
	}
}

// Produce hands ev to the producer. It blocks while the producer's buffer is
// full or a refused batch is resent, until ctx ends, or until Run stops or
// returns (then it returns ErrClosed).
// The token comes back through the AckFunc. Call it from one goroutine, in
// WAL order: records keep their order only among one goroutine's calls. A
// second goroutine may produce to other topics concurrently (the relay's
// dead-letter copies do).
func (s *Sink) Produce(ctx context.Context, ev *outboxrelay.Event, token uint64) error {
	select {
	case <-s.ready: // once connected, without the select below (see handOver)
	default:
		select {
		case <-s.ready:
		case <-s.stopped:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	msg := NewRecord(ev, token)
	for {
		resumed, err := s.handOver(ctx, msg)
		if resumed == nil {
			return err
		}
		// Run may return while no producer is set (it could not connect
		// one after a refusal): then nothing will close resumed.
		select {
		case <-resumed:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return ErrClosed
		case <-s.stopped:
			return ErrClosed
		}
	}
}

// handOver gives msg to the current producer. While there is none, it
// returns the channel closed when there is one again.
func (s *Sink) handOver(ctx context.Context, msg *sarama.ProducerMessage) (<-chan struct{}, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case s.closed:
		return nil, ErrClosed
	case s.producer == nil:
		return s.resumed, nil
	}
	// Mostly the producer takes the record at once: a send alone costs a
	// fraction of the select below, which locks all five channels
	// (select was 18% of the relay's CPU in a drain, docs/benchmarks.md).
	// The select could pick the send as well when others are ready.
	select {
	case s.producer.Input() <- msg:
		s.metrics.produced.Inc(msg.Topic)
		return nil, nil
	default:
	}
	select {
	case s.producer.Input() <- msg:
		s.metrics.produced.Inc(msg.Topic)
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.closing:
		return nil, ErrClosed
	case <-s.stopped:
		return nil, ErrClosed
	case <-s.retiring:
		return s.resumed, nil
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
			token: token, id: ev.ID, lsn: ev.LSN, commitLSN: ev.CommitLSN,
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
	if !ev.Timestamp.IsZero() {
		r.msg.Timestamp = ev.Timestamp
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
