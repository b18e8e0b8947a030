package sink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/IBM/sarama"
	"github.com/eapache/go-resiliency/breaker"
)

// producer is one sarama producer of the sink (see Sink: isolation).
type producer struct {
	p    sarama.AsyncProducer
	gate *gate
	// maxRecords caps the records of a request (sarama's
	// Producer.Flush.MaxMessages); 0 leaves batches to Producer.MaxMessageBytes.
	// At 1 each record has a request of its own, so a refusal is about
	// that record alone.
	maxRecords int
	// retired is set at a batch refusal: the gate is closed and every
	// record the producer fails from then on is held for a resend.
	retired bool
	// ending is set at a retriable failure: the session ends there, the
	// gate is closed and nothing may be sent ahead of the next session's
	// resend, so no later refusal is isolated.
	ending bool
	// closesItself: the producer resending held records closes once each
	// record handed to it is reported (see closeIfDone); nothing else may
	// close it.
	closesItself bool

	// The fields below are the drain goroutine's only.

	// refusedBatch counts, per partition, the records a batch refusal
	// failed: the size of the batch Kafka refused. refused holds them.
	refusedBatch map[topicPartition]int
	refused      map[*sarama.ProducerMessage]bool
	// refusedAlone counts the records refused in a request of their own.
	refusedAlone int
	// fed delivers, to a resending producer's drain, how many records were
	// handed to it, once feeding ends.
	fed              <-chan int
	handed, reported int // handed is -1 until fed delivers
	closed           bool
}

type topicPartition struct {
	topic     string
	partition int32
}

func (pr *producer) oneAtATime() bool { return pr.maxRecords == 1 }

// largestRefusal is the record count of the largest batch Kafka refused.
func (pr *producer) largestRefusal() int {
	n := 0
	for _, c := range pr.refusedBatch {
		n = max(n, c)
	}
	return n
}

// connect starts a producer that puts at most maxRecords records in a
// request (0: no cap). A resending one flushes at once and closes itself.
func (s *Sink) connect(maxRecords int, resending bool) (*producer, error) {
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
	cfg.Producer.Flush.MaxMessages = maxRecords
	if resending || maxRecords == 1 {
		cfg.Producer.Flush.Messages, cfg.Producer.Flush.Bytes, cfg.Producer.Flush.Frequency = 0, 0, 0
	}
	p, err := sarama.NewAsyncProducer(s.brokers, &cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to kafka %v: %w", s.brokers, err)
	}
	return &producer{p: p, gate: g, maxRecords: maxRecords, closesItself: resending, handed: -1}, nil
}

// closeIfDone closes a resending producer once every record handed to it
// is reported, or as soon as feeding ends when Run stops. Closed right
// after the last record was handed over, sarama failed a batch it was
// still retrying (CORRUPT_MESSAGE, a leader moving) with ErrShuttingDown.
func (pr *producer) closeIfDone(stopping bool) {
	if pr.closesItself && !pr.closed && pr.handed >= 0 && (pr.reported >= pr.handed || stopping) {
		pr.closed = true
		pr.p.AsyncClose()
	}
}

// split parts held into the records a batch refusal failed and the rest.
func (pr *producer) split(held []*sarama.ProducerMessage) (refused, rest []*sarama.ProducerMessage) {
	for _, m := range held {
		if pr.refused[m] {
			refused = append(refused, m)
		} else {
			rest = append(rest, m)
		}
	}
	return refused, rest
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

// isClosing reports whether Run is shutting down.
func (s *Sink) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// drain reports what pr acks and fails until pr has closed: because ctx
// ended (or a panic), or because a batch refusal retired it. It returns
// the records to resend, unless Run is stopping.
func (s *Sink) drain(ctx context.Context, pr *producer) ([]*sarama.ProducerMessage, error) {
	successes, errs := pr.p.Successes(), pr.p.Errors()
	atSelect, detach := pr.gate.attach()
	defer detach()
	stop, stopping := ctx.Done(), false
	var held []*sarama.ProducerMessage
	var failure error
	var giveUp <-chan time.Time
	burst := 0
	for successes != nil || errs != nil {
		// Acks first, without the select below, which locks all eight
		// channels per record (select was 18% of the relay's CPU in a
		// drain, docs/benchmarks.md). Bounded, so the select still runs.
		if burst < maxAckBurst && successes != nil {
			select {
			case m, ok := <-successes:
				burst++
				if !ok {
					successes = nil
				} else {
					s.acked(pr, m, stopping)
				}
				continue
			default:
			}
		}
		burst = 0
		select {
		case m, ok := <-successes:
			if !ok {
				successes = nil
				continue
			}
			s.acked(pr, m, stopping)
		case pe, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			if s.testHookError != nil {
				s.testHookError(pe)
			}
			pe.Err = s.topicFailures.failed(pe.Msg.Topic, pe.Err)
			pe.Err = waitForTopic(s.missing, s.topicWait, pe.Msg.Topic, pe.Err, time.Now())
			if s.failedOrHeld(pr, pe, stopping) {
				held = append(held, pe.Msg)
			}
			pr.reported++
			pr.closeIfDone(stopping)
		case <-atSelect:
			// A write waited for the reports above to be handled.
		case n := <-pr.fed:
			pr.fed, pr.handed = nil, n
			pr.closeIfDone(stopping)
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
			pr.closeIfDone(stopping)
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

// maxAckBurst bounds the acks drain takes before it looks at its other
// channels.
const maxAckBurst = 256

// acked reports a record pr delivered.
func (s *Sink) acked(pr *producer, m *sarama.ProducerMessage, stopping bool) {
	s.topicFailures.succeeded(m.Topic)
	s.missing.found(m.Topic)
	s.succeeded(m)
	pr.reported++
	pr.closeIfDone(stopping)
}

// failedOrHeld reports a record pr failed, or reports that it is to be
// resent: pr refused a batch (or, resending, hit sarama's circuit breaker)
// and sends nothing more. Only a batch refusal isolates: the other final
// errors (an unknown topic, a topic Kafka does not let the relay write)
// hold for each record alike, and resending the batch one record at a
// time would only stall every topic meanwhile.
func (s *Sink) failedOrHeld(pr *producer, pe *sarama.ProducerError, stopping bool) bool {
	refusal := refusedByBroker(pe.Err)
	if refusal && !pr.oneAtATime() {
		if pr.refusedBatch == nil {
			pr.refusedBatch, pr.refused = map[topicPartition]int{}, map[*sarama.ProducerMessage]bool{}
		}
		pr.refusedBatch[topicPartition{pe.Msg.Topic, pe.Msg.Partition}]++
		pr.refused[pe.Msg] = true
	}
	if pr.retired {
		return true
	}
	if IsRetriable(pe.Err) {
		if pr.closesItself && !pr.gate.isClosed() && errors.Is(pe.Err, breaker.ErrBreakerOpen) {
			s.blocked(pr, pe)
			return true
		}
		// The session ends at this failure and the next one resends from
		// the slot: nothing this producer sends from now on may land
		// ahead of that resend.
		pr.gate.close()
		pr.ending = true
	}
	if refusal && pr.ending {
		// Isolating would send the batch's records ahead of that resend.
		pe.Err = fmt.Errorf("%w (kafka refused its batch: %v)", errSessionEnding, pe.Err)
		refusal = false
	}
	if !refusal || pr.oneAtATime() {
		if refusal {
			pr.refusedAlone++
		}
		if s.stopAtUndeliverable && !IsRetriable(pe.Err) {
			// sarama may send the partition's later records once this
			// error is received, but no write passes the gate before the
			// drain is back at its select: closing the gate now keeps
			// them out of Kafka.
			pr.gate.close()
			pr.ending = true
		}
		s.failed(pe)
		return false
	}
	s.refused(pr, pe, stopping)
	return true
}

// closer is what shutDown closes for pr: nothing once it is retired
// (retire closed it) or when it closes itself.
func (pr *producer) closer() sarama.AsyncProducer {
	if pr.retired || pr.closesItself {
		return nil
	}
	return pr.p
}

// refused retires pr at a refusal of a batch. sarama may send the
// partition's later records right after the batch's last error is
// received, but their write waits for the drain to handle it (see gate):
// the gate closes first. A resending producer closes itself; isolate goes
// on with the next round.
func (s *Sink) refused(pr *producer, pe *sarama.ProducerError, stopping bool) {
	pr.gate.close()
	pr.retired = true
	if stopping || pr.closesItself {
		return // already closing; what it holds is failed, not resent
	}
	s.metrics.isolations.Inc()
	s.log.Warn().Err(pe.Err).Str("topic", pe.Msg.Topic).Int32("partition", pe.Msg.Partition).
		Msg("kafka refused a batch; resending its records in smaller batches, down to one per request, to find the one it refuses")
	s.retire(pr.p)
}

// isolate resends held, what the producer refusedBy held once a batch
// refusal retired it, then starts a batching producer for what follows.
// It returns no producer when Run is to stop.
//
// Only the refused batches' records are suspects. Each round resends them,
// in the order they were produced, through a producer putting at most
// half as many records in a request as the largest batch refused before
// (as the Java producer splits a refused batch); a refusal retires that
// producer as at first: what it acked stays acked, the batch it refused
// is the next round's suspects, and its records after that batch wait
// with the rest. At one record per request a refusal is that record's own,
// and final. Once no suspect is left, the rest goes through a producer
// batching as before, which may be refused in turn. When no record was
// refused alone, the batches were too large only together (a topic's
// max.message.bytes below the producer's batch size): every later
// producer of the sink keeps the record cap that got them through, so
// later bursts are not refused again.
func (s *Sink) isolate(ctx context.Context, held []*sarama.ProducerMessage, refusedBy *producer) (*producer, error) {
	suspects, rest := refusedBy.split(held)
	ep := newEpisode(refusedBy)
	for len(suspects)+len(rest) > 0 {
		batch, limit, waiting := suspects, ep.limit, rest
		if len(suspects) == 0 {
			batch, limit, waiting = rest, s.maxRecords, nil
		}
		pr, again, err := s.resend(ctx, batch, limit)
		if err != nil || s.isClosing() {
			s.failAll(waiting, cmp.Or(err, ErrClosed))
			return nil, err
		}
		if pr.ending {
			s.failAll(waiting, errSessionEnding)
			return s.resume(true)
		}
		refused, after := pr.split(again)
		if len(suspects) == 0 {
			rest = after
			if len(refused) > 0 {
				s.metrics.isolations.Inc()
				ep = newEpisode(pr)
			}
		} else {
			rest = append(rest, after...)
			ep.round(pr)
		}
		if suspects = refused; len(suspects) == 0 && ep.tooLarge() {
			s.learnLimit(ep.limit)
		}
	}
	return s.resume(false)
}

// resume starts the batching producer Produce hands records to after an
// isolation. When a retriable failure ended the session meanwhile, that
// producer sends nothing (its gate is closed): Produce goes on until the
// session stops, and every record fails, as with the producer that
// failed.
func (s *Sink) resume(ending bool) (*producer, error) {
	next, err := s.connect(s.maxRecords, false)
	if err != nil {
		return nil, err
	}
	if ending {
		next.gate.close()
		next.ending = true
	}
	s.use(next.p)
	return next, nil
}

// episode follows the resending of the batches one refusal retired.
type episode struct {
	limit    int  // records per request of the next round of suspects
	alone    int  // records refused in a request of their own
	together bool // every batch refused held more than one record
}

func newEpisode(refusedBy *producer) episode {
	k := refusedBy.largestRefusal()
	return episode{limit: max(k/2, 1), together: k > 1}
}

// round takes in what a round of suspects learned.
func (e *episode) round(pr *producer) {
	e.alone += pr.refusedAlone
	if k := pr.largestRefusal(); k > 0 {
		e.limit, e.together = max(min(e.limit, k)/2, 1), e.together && k > 1
	}
}

// tooLarge reports whether, the suspects all delivered, the batches were
// refused only for holding too many records together.
func (e episode) tooLarge() bool { return e.alone == 0 && e.together }

// learnLimit caps the records per request of every later batching
// producer at limit, when that is below the cap they have, and says so.
// It is called on Run's goroutine only.
func (s *Sink) learnLimit(limit int) {
	if s.maxRecords != 0 && s.maxRecords <= limit {
		return
	}
	s.maxRecords = limit
	s.log.Warn().Int("max_records_per_request", limit).
		Msg("kafka refused batches whose records it accepts in smaller ones (a topic's max.message.bytes is below --kafka-max-message-bytes); " +
			"sending at most this many records per request for the rest of the session; set --kafka-max-message-bytes to the smallest topic limit to batch by size instead")
}

// resend is one round of isolate: it resends held through a new producer
// that puts at most limit records in a request (0: no cap), and returns
// that producer and the records to resend in another round: those it held
// after a refusal (or after sarama's circuit breaker opened, see blocked).
func (s *Sink) resend(ctx context.Context, held []*sarama.ProducerMessage, limit int) (*producer, []*sarama.ProducerMessage, error) {
	slices.SortFunc(held, func(a, b *sarama.ProducerMessage) int {
		return cmp.Compare(a.Metadata.(*delivery).token, b.Metadata.(*delivery).token)
	})
	pr, err := s.connect(limit, true)
	if err != nil {
		s.failAll(held, err)
		return nil, nil, err
	}
	fed, done, abandon := make(chan int, 1), make(chan struct{}), make(chan struct{})
	pr.fed = fed
	sent := 0
	go func() {
		defer close(done)
		// Once the gate closes nothing more reaches Kafka: keep the rest
		// out of sarama.
		for _, m := range held {
			if pr.gate.isClosed() {
				break
			}
			select {
			case pr.p.Input() <- m:
				sent++
				continue
			case <-s.closing:
			case <-abandon:
				return
			}
			break
		}
		fed <- sent
	}()
	again, err := s.drain(ctx, pr)
	close(abandon)
	<-done
	unsent := held[sent:]
	switch {
	case err != nil:
		s.failAll(unsent, err)
		return nil, nil, err
	case s.isClosing():
		s.failAll(unsent, ErrClosed)
		return pr, nil, nil
	case pr.ending:
		s.failAll(unsent, errSessionEnding)
		return pr, again, nil
	}
	return pr, append(again, unsent...), nil
}

// blocked retires pr, a producer resending refused records, when sarama
// fails a record with its circuit breaker open. After three failed
// lookups of a topic (or a partition's leader) sarama fails every record
// of it for 10 s without sending it: three records of a topic that does
// not exist (auto-create off) made every later one fail that way, a
// retriable error, so the session restarted and resent them, forever.
// The record was never sent; the gate keeps the records after it from
// being sent ahead of it, and every record pr fails from now on is held
// and resent by a new producer, whose breakers are closed: each round
// learns at least one record's own fate.
func (s *Sink) blocked(pr *producer, pe *sarama.ProducerError) {
	pr.gate.close()
	pr.retired = true
	s.log.Warn().Err(pe.Err).Str("topic", pe.Msg.Topic).
		Msg("kafka producer stopped looking the topic up after repeated failures; resending the rest with a new producer")
}

func (s *Sink) succeeded(m *sarama.ProducerMessage) {
	d := m.Metadata.(*delivery)
	s.metrics.acked.Inc(m.Topic)
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
