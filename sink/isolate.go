package sink

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/IBM/sarama"
)

// producer is one sarama producer of the sink (see Sink: isolation).
type producer struct {
	p    sarama.AsyncProducer
	gate *gate
	// oneAtATime puts each record in a request of its own, so a refusal
	// is about that record alone.
	oneAtATime bool
	// retired is set at a batch refusal: the gate is closed and every
	// record the producer fails from then on is held for a resend.
	retired bool
	// closesItself: the producer resending held records closes once they
	// are all handed over; nothing else may close it.
	closesItself bool
}

// connect starts a producer, batching or one record per request.
func (s *Sink) connect(oneAtATime bool) (*producer, error) {
	g := newGate(net.Dialer{Timeout: s.cfg.Net.DialTimeout, KeepAlive: s.cfg.Net.KeepAlive})
	cfg := *s.cfg // a copy per producer, for its own dialer and flushing
	cfg.Net.Proxy.Enable, cfg.Net.Proxy.Dialer = true, g
	cfg.Producer.Retry.BackoffFunc = func(retries, _ int) time.Duration { return s.retryWait(g, retries) }
	cfg.Metadata.Retry.BackoffFunc = func(int, int) time.Duration {
		if g.isClosed() {
			return 0 // no dial can succeed: let sarama give up at once
		}
		return metadataBackoff
	}
	if oneAtATime {
		cfg.Producer.Flush.MaxMessages = 1
		cfg.Producer.Flush.Messages, cfg.Producer.Flush.Bytes, cfg.Producer.Flush.Frequency = 0, 0, 0
	}
	p, err := sarama.NewAsyncProducer(s.brokers, &cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to kafka %v: %w", s.brokers, err)
	}
	return &producer{p: p, gate: g, oneAtATime: oneAtATime}, nil
}

// use makes p the producer Produce hands records to.
func (s *Sink) use(p sarama.AsyncProducer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.producer = p
	close(s.resumed)
}

// retire stops Produce from handing records to p, then closes p. The
// switch runs off the drain goroutine: a Produce holding the read lock may
// be waiting for sarama, which waits for the drain to read its acks.
func (s *Sink) retire(p sarama.AsyncProducer) {
	close(s.retiring)
	go func() {
		s.mu.Lock()
		s.producer, s.resumed, s.retiring = nil, make(chan struct{}), make(chan struct{})
		s.mu.Unlock()
		p.AsyncClose()
	}()
}

// shutDown stops Produce for good and closes p (nil: p is already
// closing, or closes itself). Off the drain goroutine, as in retire.
func (s *Sink) shutDown(p sarama.AsyncProducer) {
	close(s.closing)
	go func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		if p != nil {
			p.AsyncClose()
		}
	}()
}

// drain reports what pr acks and fails until pr has closed: because ctx
// ended (or a panic), or because a batch refusal retired it. It returns
// the records to resend one per request, unless Run is stopping.
func (s *Sink) drain(ctx context.Context, pr *producer) ([]*sarama.ProducerMessage, error) {
	successes, errs := pr.p.Successes(), pr.p.Errors()
	stop, stopping := ctx.Done(), false
	var held []*sarama.ProducerMessage
	var failure error
	var giveUp <-chan time.Time
	for successes != nil || errs != nil {
		select {
		case m, ok := <-successes:
			if !ok {
				successes = nil
				continue
			}
			s.succeeded(m)
		case pe, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			if !pr.retired && (pr.oneAtATime || !refusedByBroker(pe.Err)) {
				s.failed(pe)
				continue
			}
			if !pr.retired {
				s.refused(pr, pe, stopping)
			}
			held = append(held, pe.Msg)
		case pe := <-s.panicCh:
			s.log.Error().Interface("panic", pe.Value).Bytes("stack", pe.Stack).Msg("kafka producer panicked; closing it")
			// The panicking goroutine is gone and sarama may never finish
			// closing: stop it sending, and stop waiting after Timeout.
			failure, giveUp = pe, time.After(s.cfg.Producer.Timeout)
			pr.gate.close()
			if !stopping {
				stop, stopping = nil, true
				s.shutDown(pr.closer())
			}
		case <-stop:
			stop, stopping = nil, true
			s.shutDown(pr.closer())
		case <-giveUp:
			s.failAll(held, failure)
			return nil, failure
		}
	}
	if stopping {
		s.failAll(held, ErrClosed)
		return nil, failure
	}
	return held, nil
}

// closer is what shutDown closes for pr: nothing once it is retired
// (retire closed it) or when it closes itself.
func (pr *producer) closer() sarama.AsyncProducer {
	if pr.retired || pr.closesItself {
		return nil
	}
	return pr.p
}

// refused retires pr at a refusal of a batch. sarama is blocked until
// this error is received, and sends the partition's later records right
// after the batch's last error: the gate closes first.
func (s *Sink) refused(pr *producer, pe *sarama.ProducerError, stopping bool) {
	pr.gate.close()
	pr.retired = true
	if stopping {
		return // already closing; what it holds is failed, not resent
	}
	s.metrics.isolations.Inc()
	s.log.Warn().Err(pe.Err).Str("topic", pe.Msg.Topic).Int32("partition", pe.Msg.Partition).
		Msg("kafka refused a batch; resending its records one per request to find the one it refuses")
	s.retire(pr.p)
}

// isolate resends held in the order it was produced, one record per
// request, reporting each one's fate; then it starts a batching producer
// for what follows. It returns no producer when Run is to stop.
func (s *Sink) isolate(ctx context.Context, held []*sarama.ProducerMessage) (*producer, error) {
	slices.SortFunc(held, func(a, b *sarama.ProducerMessage) int {
		return cmp.Compare(a.Metadata.(*delivery).token, b.Metadata.(*delivery).token)
	})
	one, err := s.connect(true)
	if err != nil {
		s.failAll(held, err)
		return nil, err
	}
	one.closesItself = true
	sent, fed, abandon := 0, make(chan struct{}), make(chan struct{})
	go func() {
		defer close(fed)
		for _, m := range held {
			select {
			case one.p.Input() <- m:
				sent++
			case <-abandon:
				return
			}
		}
		one.p.AsyncClose()
	}()
	_, err = s.drain(ctx, one)
	close(abandon)
	<-fed
	if err != nil {
		s.failAll(held[sent:], err)
		return nil, err
	}
	select {
	case <-s.closing:
		return nil, nil
	default:
	}
	next, err := s.connect(false)
	if err != nil {
		return nil, err
	}
	s.use(next.p)
	return next, nil
}

func (s *Sink) succeeded(m *sarama.ProducerMessage) {
	d := m.Metadata.(*delivery)
	s.metrics.acked.WithLabelValues(s.metrics.topics.Label(m.Topic)).Inc()
	s.metrics.latency.Observe(time.Since(d.commitTime).Seconds())
	s.onAck(d.token, nil)
}

// failed reports a record's final error.
func (s *Sink) failed(pe *sarama.ProducerError) {
	d := pe.Msg.Metadata.(*delivery)
	kind := "retriable"
	if !IsRetriable(pe.Err) {
		kind = "undeliverable"
	}
	s.metrics.errors.WithLabelValues(kind).Inc()
	s.onAck(d.token, &DeliveryError{EventID: d.id, Topic: pe.Msg.Topic, LSN: d.lsn, CommitLSN: d.commitLSN, Err: pe.Err,
		Key: encoded(pe.Msg.Key), Value: encoded(pe.Msg.Value)})
}

// failAll reports err for records that will not be sent.
func (s *Sink) failAll(msgs []*sarama.ProducerMessage, err error) {
	for _, m := range msgs {
		s.failed(&sarama.ProducerError{Msg: m, Err: err})
	}
}
