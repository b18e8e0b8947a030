package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// Txn is the exactly-once producer (Config.Transactions). Events go into
// Kafka transactions of sarama's transactional producer; each Kafka
// transaction also writes the Position it reaches to the offsets topic, so
// the events and the record of having sent them become visible together
// or not at all. An event is reported acked (AckFunc) only once its Kafka
// transaction committed, so the slot is confirmed only behind committed
// transactions. On start, Run fences any older producer with the same
// transactional.id (its open transaction is aborted), then reads the
// committed position; Produce drops, as acked, every event it covers:
// Postgres re-sends from its slot, which may be behind Kafka.
//
// A Kafka transaction ends every CommitInterval, or sooner once it holds
// CommitBytes; it may end inside a Postgres transaction (the position then
// counts the events of that transaction committed so far), so a huge
// transaction needs no more memory than the relay's in-flight caps.
// Any failure aborts the open Kafka transaction and ends Run: its events
// were never acked and the next session sends them again.
type Txn struct {
	cfg     *sarama.Config
	brokers []string
	tx      Transactions
	onAck   AckFunc
	log     zerolog.Logger
	metrics *Metrics
	// missing and topicWait make a missing topic retriable for a while, as
	// in Sink.
	missing   *MissingTopics
	topicWait time.Duration
	// backoffMax bounds the wait between retries of a batch; gate is the
	// connections' (see connect).
	backoffMax time.Duration
	gate       *gate

	ready   chan struct{} // closed once the position is read
	closing chan struct{} // closed when Run begins shutting down
	stopped chan struct{} // closed when Run returns
	full    chan struct{} // Produce asks for an early commit

	// sem (one slot) serializes Produce with the commits: a record must not
	// fall into a Kafka transaction that is ending. It is a channel so
	// Produce can give up when its ctx ends while a commit waits on Kafka.
	sem      chan struct{}
	panics   *Panics
	panicCh  chan *PanicError
	producer sarama.AsyncProducer
	start    Position // what Kafka held when Run began
	cur      Position // the transaction of the last event seen and its count
	sent     Position // the last event handed to the open transaction
	open     bool
	// openedAt (unix nanos) is when the open transaction began: one that
	// outlived the broker's transaction timeout was aborted by it, which
	// looks like being fenced.
	openedAt atomic.Int64
	tokens   []uint64 // the events of the open transaction
	bytes    int

	failMu  sync.Mutex
	failure error // a record failed: the open transaction cannot commit
	runErr  error // why Run stopped early: Produce returns it
}

// NewTxn validates cfg, which must have Transactions.Enabled, and returns
// an exactly-once producer; it connects to nothing.
func NewTxn(cfg Config, onAck AckFunc, opts ...Option) (*Txn, error) {
	if onAck == nil {
		return nil, errors.New("sink: an AckFunc is required")
	}
	if tx := cfg.Transactions; !tx.Enabled || tx.ID == "" || tx.PositionKey == "" {
		return nil, errors.New("sink: NewTxn needs Config.Transactions with Enabled, ID and PositionKey")
	}
	sc, err := cfg.saramaConfig()
	if err != nil {
		return nil, err
	}
	// Options are written for Sink; the ones that apply are copied over.
	var s Sink
	for _, o := range opts {
		o(&s)
	}
	t := &Txn{
		cfg: sc, brokers: cfg.Brokers, tx: cfg.Transactions, onAck: onAck, log: s.log, metrics: s.metrics,
		missing: s.missing, topicWait: cfg.TopicWait, backoffMax: cfg.RetryBackoffMax, panics: s.panics,
		sem: make(chan struct{}, 1), panicCh: make(chan *PanicError, 1),
		ready: make(chan struct{}), closing: make(chan struct{}), stopped: make(chan struct{}), full: make(chan struct{}, 1),
	}
	if t.metrics == nil {
		t.metrics = NewMetrics(nil)
	}
	if t.missing == nil {
		t.missing = NewMissingTopics()
	}
	sc.Producer.Transaction.ID = cfg.Transactions.ID
	sc.Producer.Transaction.Timeout = cfg.Transactions.Timeout
	sc.Producer.Partitioner = func(string) sarama.Partitioner { return txnPartitioner{} }
	sc.Consumer.IsolationLevel = sarama.ReadCommitted
	return t, nil
}

// Ready is closed once the producer is connected and the position read.
func (t *Txn) Ready() <-chan struct{} { return t.ready }

// Run connects, fences older producers, reads the committed position and
// commits the open Kafka transaction on its cadence until ctx ends; it
// then commits what is open (unless something failed) and closes.
func (t *Txn) Run(ctx context.Context) error {
	defer close(t.stopped)
	client, producer, start, err := t.connect()
	if err != nil {
		return err
	}
	defer client.Close()
	if start, err = t.judgeStart(start); err != nil {
		producer.AsyncClose()
		drainClosed(producer)
		return err
	}
	if t.panics != nil {
		t.panics.add(t)
		defer t.panics.remove(t)
	}
	t.sem <- struct{}{}
	t.producer, t.start = producer, start
	<-t.sem
	t.log.Info().Str("transactional_id", t.tx.ID).Str("commit_lsn", start.Commit.String()).Int("events", start.Events).
		Msg("exactly-once: Kafka holds everything up to this position; Postgres re-sends from the slot and what Kafka holds is dropped")
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		t.drain(producer)
	}()
	close(t.ready)
	watchDone := make(chan struct{})
	defer close(watchDone)
	go t.watchFatal(producer, watchDone)
	err = t.loop(ctx)
	if err != nil && !errors.Is(err, ErrFenced) && producer.TxnStatus()&sarama.ProducerTxnFlagFatalError != 0 {
		// The first failure seen (a broker connection, say) came with, or
		// after, the one that ended the transaction manager.
		err = t.fatal(err)
	}
	if err != nil {
		t.setRunErr(err)
	}
	close(t.closing)
	if err == nil {
		err = t.commit()
	}
	if err != nil {
		// Nothing more may reach Kafka; the open transaction is aborted
		// by the next producer with this id (the next session's) or after
		// the transaction timeout.
		t.gate.close()
	}
	t.dropOpen()
	producer.AsyncClose()
	<-drained
	return err
}

// loop commits every CommitInterval, or when Produce finds the open
// transaction full.
func (t *Txn) loop(ctx context.Context) error {
	tick := time.NewTicker(t.tx.CommitInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-t.full:
		case pe := <-t.panicCh:
			t.log.Error().Interface("panic", pe.Value).Bytes("stack", pe.Stack).Msg("kafka producer panicked; closing it")
			t.gate.close() // the panicking goroutine is gone: nothing may wait on it
			return pe
		}
		if err := t.commit(); err != nil {
			return err
		}
	}
}

// watchFatal closes the gate once the transaction manager has failed for
// good (fenced, say). sarama keeps retrying the open transaction's records
// (it does not know PRODUCER_FENCED is final), and a commit waits for them
// before it reports the failure: with the gate closed they fail at once.
func (t *Txn) watchFatal(p sarama.AsyncProducer, done <-chan struct{}) {
	tick := time.NewTicker(min(t.tx.CommitInterval, 50*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			if p.TxnStatus()&sarama.ProducerTxnFlagFatalError != 0 {
				t.gate.close()
				return
			}
		}
	}
}

// Produce adds ev to the open Kafka transaction, or acks it at once when
// Kafka already holds it. Call it from one goroutine, in WAL order: the
// count of events inside a Postgres transaction relies on it.
func (t *Txn) Produce(ctx context.Context, ev *outboxrelay.Event, token uint64) error {
	select {
	case <-t.ready:
	case <-t.stopped:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := t.lock(ctx); err != nil {
		return err
	}
	defer t.unlock()
	if ev.CommitLSN != t.cur.Commit {
		t.cur = Position{Commit: ev.CommitLSN}
	}
	n := t.cur.Events + 1 // counted once handed over or dropped
	if t.start.covers(t.cur.Commit, n) {
		if n == t.start.Events && t.cur.Commit == t.start.Commit && t.start.EventID != "" && ev.ID != t.start.EventID {
			return t.mismatch(ev)
		}
		t.cur.Events = n
		t.metrics.committedBefore.Inc()
		t.onAck(token, nil)
		return nil
	}
	if !t.open {
		if err := t.producer.BeginTxn(); err != nil {
			return fmt.Errorf("begin a kafka transaction: %w", t.classify(err))
		}
		t.open = true
		t.openedAt.Store(time.Now().UnixNano())
	}
	select {
	case t.producer.Input() <- NewRecord(ev, token):
	case <-ctx.Done():
		return ctx.Err()
	case <-t.closing:
		return t.closedErr()
	}
	t.cur.Events = n
	t.sent = Position{Commit: t.cur.Commit, Events: n, EventID: ev.ID, Timeline: t.tx.Timeline}
	t.metrics.produced.Inc(ev.Topic)
	t.tokens = append(t.tokens, token)
	if t.bytes += len(ev.Key) + len(ev.Value); t.bytes >= t.tx.CommitBytes {
		select {
		case t.full <- struct{}{}:
		default:
		}
	}
	return nil
}

// commit ends the open Kafka transaction with the position it reaches and
// acks its events.
func (t *Txn) commit() error {
	t.sem <- struct{}{}
	defer t.unlock()
	if !t.open {
		return nil
	}
	if t.producer.TxnStatus()&sarama.ProducerTxnFlagFatalError != 0 {
		return t.fatal(t.recordFailure())
	}
	if err := t.recordFailure(); err != nil {
		return err
	}
	started := time.Now()
	t.producer.Input() <- &sarama.ProducerMessage{
		Topic: t.tx.OffsetsTopic, Key: sarama.StringEncoder(t.tx.PositionKey),
		Value: sarama.ByteEncoder(encodePosition(t.tx.Slot, t.sent, started)),
	}
	if err := t.producer.CommitTxn(); err != nil {
		if rf := t.recordFailureSoon(); rf != nil {
			return rf
		}
		return fmt.Errorf("commit the kafka transaction: %w", t.classify(err))
	}
	t.open = false
	t.openedAt.Store(0)
	t.metrics.transactions.WithLabelValues("committed").Inc()
	t.metrics.txnCommitSeconds.Observe(time.Since(started).Seconds())
	for _, tok := range t.tokens {
		t.onAck(tok, nil)
	}
	t.tokens, t.bytes = t.tokens[:0], 0
	return nil
}

// fatal is the error of a transaction manager that failed for good. sarama
// keeps the cause to itself (and would wait out the records' retries before
// a commit returned it); the fatal causes are being fenced and losing the
// rights to the id, and the next session's start tells the two apart.
func (t *Txn) fatal(seen error) error {
	if err := t.timedOut(seen); err != nil {
		return err
	}
	t.metrics.fenced.Inc()
	detail := ""
	if seen != nil {
		detail = fmt.Sprintf(" (first record error: %v)", seen)
	}
	return fmt.Errorf("%w: the transactional producer failed for good: fenced by a newer producer with transactional.id %q "+
		"(another relay took the slot over), or Kafka no longer lets it use the id%s", ErrFenced, t.tx.ID, detail)
}

// dropOpen forgets the open transaction, if any, once Run stops after a
// failure: its events were never acked and the next session resends them.
func (t *Txn) dropOpen() {
	t.sem <- struct{}{}
	defer t.unlock()
	if t.open {
		t.open = false
		t.metrics.transactions.WithLabelValues("aborted").Inc()
	}
}

// drain reads the producer's reports: successes only matter once their
// transaction commits; the first failure dooms the open transaction.
func (t *Txn) drain(p sarama.AsyncProducer) {
	successes, errs := p.Successes(), p.Errors()
	for successes != nil || errs != nil {
		select {
		case m, ok := <-successes:
			if !ok {
				successes = nil
				continue
			}
			if d, isEvent := m.Metadata.(*delivery); isEvent {
				t.missing.found(m.Topic)
				t.metrics.acked.Inc(m.Topic)
				t.metrics.latency.Observe(time.Since(d.commitTime).Seconds())
			}
		case pe, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			t.failed(pe)
		}
	}
}

// failed keeps the first record failure of the open transaction.
func (t *Txn) failed(pe *sarama.ProducerError) {
	t.failMu.Lock()
	defer t.failMu.Unlock()
	if t.failure != nil {
		return // the rest of a doomed transaction fails with it
	}
	if errors.Is(pe.Err, sarama.ErrTransactionNotReady) || errors.Is(pe.Err, errGateClosed) {
		// Consequences: the transaction manager already failed (fenced,
		// say: see watchFatal), and the commit returns that cause.
		return
	}
	d, isEvent := pe.Msg.Metadata.(*delivery)
	switch {
	case isFenced(pe.Err):
		t.failure = t.classify(pe.Err)
	case isEvent:
		err := waitForTopic(t.missing, t.topicWait, pe.Msg.Topic, pe.Err, time.Now())
		kind := "retriable"
		if !IsRetriable(err) {
			kind = "undeliverable"
		}
		t.metrics.errors.WithLabelValues(kind).Inc()
		t.failure = &DeliveryError{EventID: d.id, Topic: pe.Msg.Topic, LSN: d.lsn, CommitLSN: d.commitLSN, Err: err,
			Key: encoded(pe.Msg.Key), Value: encoded(pe.Msg.Value)}
	default:
		t.failure = fmt.Errorf("write the position to offsets topic %q: %w", pe.Msg.Topic, t.classify(pe.Err))
	}
}

func (t *Txn) setRunErr(err error) {
	t.failMu.Lock()
	defer t.failMu.Unlock()
	t.runErr = err
}

// closedErr is what Produce returns once Run is stopping: the failure that
// stopped it, so the session reports the cause, not "closed".
func (t *Txn) closedErr() error {
	t.failMu.Lock()
	defer t.failMu.Unlock()
	if t.runErr != nil {
		return t.runErr
	}
	return ErrClosed
}

func (t *Txn) recordFailure() error {
	t.failMu.Lock()
	defer t.failMu.Unlock()
	return t.failure
}

// recordFailureSoon is recordFailure after a failed commit: sarama hands
// the failed record to the drain before the commit returns, but the drain
// may not have stored it yet.
func (t *Txn) recordFailureSoon() error {
	for range 20 {
		if err := t.recordFailure(); err != nil {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// txnPartitioner puts an event on its partition key's partition, as Sink's
// partitioner does, and a position record on its key's.
type txnPartitioner struct{}

func (txnPartitioner) Partition(m *sarama.ProducerMessage, n int32) (int32, error) {
	if n <= 0 {
		return 0, fmt.Errorf("sink: topic %q has no partitions", m.Topic)
	}
	if d, isEvent := m.Metadata.(*delivery); isEvent {
		return PartitionFor(d.partitionKey, n), nil
	}
	return PartitionFor(encoded(m.Key), n), nil
}

func (txnPartitioner) RequiresConsistency() bool { return true }

// lock takes the turn to use the producer; it gives up when ctx ends or Run
// stops, since a commit holding the turn may wait on Kafka for long.
func (t *Txn) lock(ctx context.Context) error {
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-t.closing:
		return t.closedErr()
	}
	select {
	case <-t.closing:
		<-t.sem
		return t.closedErr()
	default:
		return nil
	}
}

func (t *Txn) unlock() { <-t.sem }

// panicked ends Run after a panic sarama recovered (see Panics).
func (t *Txn) panicked(pe *PanicError) {
	select {
	case t.panicCh <- pe:
	default:
	}
}

// timedOut returns the error of a transaction the broker aborted because
// it stayed open past the transaction timeout (its state and epoch moved on
// as if another producer had fenced it), or nil.
func (t *Txn) timedOut(cause error) error {
	opened := t.openedAt.Load()
	if opened == 0 || time.Since(time.Unix(0, opened)) < t.tx.Timeout {
		return nil
	}
	return fmt.Errorf("exactly-once: the Kafka transaction stayed open longer than --exactly-once-transaction-timeout (%s), "+
		"so the broker aborted it (Kafka slow or a partition without a leader); the session resends its events: %v", t.tx.Timeout, cause)
}

// mismatch is the error of a resent transaction whose events no longer
// line up with the position Kafka holds: the relay maps other changes to
// events than when the position was written.
func (t *Txn) mismatch(ev *outboxrelay.Event) error {
	return &outboxrelay.ConfigError{
		Problem: fmt.Sprintf("exactly-once: Kafka holds the first %d events of the transaction committed at %s, the last of them %s, "+
			"but this relay maps event %s there now: the outbox mapping changed (--table, --outboxes, --message-prefix, the publication) "+
			"while that transaction was split across Kafka transactions, and counting its events would skip or repeat some",
			t.start.Events, t.start.Commit, t.start.EventID, ev.ID),
		Fix: fmt.Sprintf("start once with the previous mapping until the slot is past %s; or, accepting duplicates of that transaction, "+
			"use a new --exactly-once-offsets-topic", t.start.Commit),
	}
}

// judgeStart checks the position read against the database it is applied
// to. A position of another timeline (a promoted replica: its WAL forked
// from the one the position counts) is not used: the session resends
// from the slot, as the default mode does. A position ahead of the
// database's WAL (restored from a backup) would drop new events as
// delivered: the relay refuses to start.
func (t *Txn) judgeStart(p Position) (Position, error) {
	if p.Timeline != 0 && t.tx.Timeline != 0 && p.Timeline != t.tx.Timeline {
		t.log.Warn().Uint32("position_timeline", p.Timeline).Uint32("timeline", t.tx.Timeline).Str("commit_lsn", p.Commit.String()).
			Msg("exactly-once: the position in Kafka was written on another Postgres timeline (a failover); not using it: this start resends from the slot, and duplicates of what Kafka holds are possible")
		return Position{}, nil
	}
	if t.tx.WALEnd != 0 && p.Commit > t.tx.WALEnd {
		return p, &outboxrelay.ConfigError{
			Problem: fmt.Sprintf("exactly-once: the position Kafka holds for %q (commit %s) is ahead of this database's WAL (%s): "+
				"the database was restored from a backup or replaced, and using the position would drop its new events as delivered",
				t.tx.PositionKey, p.Commit, t.tx.WALEnd),
			Fix: "point the relay at a new --exactly-once-offsets-topic (what this database sends from its slot is then delivered, duplicates of the old history possible)",
		}
	}
	return p, nil
}
