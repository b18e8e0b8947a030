package sink

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

const (
	rvEvents  = "events"
	rvOffsets = "outbox-relay.offsets"
)

func rvCluster(t *testing.T) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, rvEvents, rvOffsets))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

type rvAcks struct {
	mu   sync.Mutex
	toks []uint64
}

func (a *rvAcks) ack(tok uint64, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		a.toks = append(a.toks, tok)
	}
}

func (a *rvAcks) n() int { a.mu.Lock(); defer a.mu.Unlock(); return len(a.toks) }

func rvTxn(t *testing.T, c *kfake.Cluster, id, key string, timeout time.Duration, acks *rvAcks) *Txn {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Brokers = c.ListenAddrs()
	cfg.Transactions.Enabled = true
	cfg.Transactions.ID = id
	cfg.Transactions.PositionKey = key
	cfg.Transactions.Slot = "s"
	cfg.Transactions.Timeout = timeout
	tx, err := NewTxn(cfg, acks.ack)
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

func rvEvent(id string, commit outboxrelay.LSN) *outboxrelay.Event {
	return &outboxrelay.Event{ID: id, Topic: rvEvents, Key: []byte(id), PartitionKey: []byte(id), Value: []byte(id), CommitLSN: commit, LSN: commit - 10}
}

// runTxn runs tx until stop is called; stop returns Run's error.
func runTxn(t *testing.T, tx *Txn) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tx.Run(ctx) }()
	select {
	case <-tx.Ready():
	case err := <-done:
		t.Fatalf("Run ended before ready: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("not ready")
	}
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return")
			return nil
		}
	}
}

func waitAcks(t *testing.T, a *rvAcks, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for a.n() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d acks, want %d", a.n(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readCommitted(t *testing.T, c *kfake.Cluster, topic string) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var ids []string
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return ids
		}
		fs.EachRecord(func(r *kgo.Record) { ids = append(ids, string(r.Key)) })
	}
}

// Review finding (fixed): another relay's transaction left open on the shared offsets
// topic pins its last stable offset; this relay's own later committed
// position is above it and readPosition never sees it, so a restart
// produces again what Kafka already holds (exactly-once broken).
func TestStartWaitsForAnotherProducersOpenTransaction(t *testing.T) {
	c := rvCluster(t)
	acks := &rvAcks{}
	tx := rvTxn(t, c, "outbox-relay-sys-s", "sys/s", time.Minute, acks)
	stop := runTxn(t, tx)
	// Another relay (another database) sharing the default offsets topic
	// has a transaction open on it: it died between writing its position
	// and EndTxn, or its commit is slow.
	other, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.TransactionalID("outbox-relay-other-s"),
		kgo.TransactionTimeout(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := other.ProduceSync(context.Background(), &kgo.Record{Topic: rvOffsets, Key: []byte("other/s"), Value: []byte(`{}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	for i, id := range []string{"e1", "e2", "e3"} {
		if err := tx.Produce(context.Background(), rvEvent(id, 100), uint64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	waitAcks(t, acks, 3) // committed: events and position (0/64, 3)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// The next session (a restart, a standby taking over): Postgres re-sends
	// the transaction (the slot was not yet confirmed past it).
	acks2 := &rvAcks{}
	tx2 := rvTxn(t, c, "outbox-relay-sys-s", "sys/s", time.Minute, acks2)
	// The other relay's transaction ends a second into the start; the
	// start waits for it rather than read a stale position.
	go func() {
		time.Sleep(time.Second) // how long the other transaction stays open, not a wait for a result
		if err := other.EndTransaction(context.Background(), kgo.TryCommit); err != nil {
			t.Error(err)
		}
	}()
	stop2 := runTxn(t, tx2)
	t.Logf("second session's start position: %+v (Kafka holds commit 100, events 3)", tx2.start)
	for i, id := range []string{"e1", "e2", "e3"} {
		if err := tx2.Produce(context.Background(), rvEvent(id, 100), uint64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	waitAcks(t, acks2, 3)
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	got := readCommitted(t, c, rvEvents)
	t.Logf("read_committed consumer sees %v", got)
	if len(got) != 3 {
		t.Errorf("exactly-once: a read_committed consumer sees %d records, want 3: %v", len(got), got)
	}
}

// Review finding (fixed): the documented remedy "delete its key" (a tombstone) does not
// reset the position while older records of the key are still in the log
// (until compaction): readPosition skips tombstones and keeps the maximum.
func TestDeletedPositionResendsFromTheSlot(t *testing.T) {
	c := rvCluster(t)
	acks := &rvAcks{}
	tx := rvTxn(t, c, "outbox-relay-sys-s", "sys/s", time.Minute, acks)
	stop := runTxn(t, tx)
	if err := tx.Produce(context.Background(), rvEvent("e1", 0x9000), 1); err != nil {
		t.Fatal(err)
	}
	waitAcks(t, acks, 1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// The operator restores the database from a backup and, as
	// docs/guarantees.md says, deletes the relay's key.
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: rvOffsets, Key: []byte("sys/s"), Value: nil}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	acks2 := &rvAcks{}
	tx2 := rvTxn(t, c, "outbox-relay-sys-s", "sys/s", time.Minute, acks2)
	stop2 := runTxn(t, tx2)
	// The restored database's WAL is behind: a new transaction commits
	// at a lower LSN than the old position.
	if err := tx2.Produce(context.Background(), rvEvent("new-after-restore", 0x5000), 1); err != nil {
		t.Fatal(err)
	}
	waitAcks(t, acks2, 1)
	stop2()
	got := readCommitted(t, c, rvEvents)
	t.Logf("start position after the tombstone: %+v; events topic holds %v", tx2.start, got)
	if len(got) != 2 {
		t.Errorf("after deleting the key, the new event was acked but never sent: topic holds %v", got)
	}
}

// Review finding (fixed): a Kafka transaction that outlives transaction.timeout because
// a partition is unavailable (the producer retries in place for up to
// RetryMax) is aborted by the coordinator; the relay then reports it as
// fenced by another relay and goes to standby, though no other producer
// exists.
func TestTimedOutTransactionIsNotFenced(t *testing.T) {
	c := rvCluster(t)
	acks := &rvAcks{}
	tx := rvTxn(t, c, "outbox-relay-sys-s", "sys/s", time.Second, acks)
	stop := runTxn(t, tx)
	f := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: rvEvents, Err: kerr.NotEnoughReplicas, Count: -1})
	if err := tx.Produce(context.Background(), rvEvent("e1", 100), 1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // past the 1 s transaction timeout
	f.Remove()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case <-tx.stopped:
		case <-deadline:
			t.Fatal("Run still running")
		case <-time.After(50 * time.Millisecond):
			continue
		}
		break
	}
	err := stop()
	t.Logf("Run: %v", err)
	if errors.Is(err, ErrFenced) {
		t.Errorf("a transaction timeout (no other producer) is reported as fenced: %v", err)
	}
	_ = sarama.ErrProducerFenced
	var m dto.Metric
	_ = tx.metrics.fenced.Write(&m)
	t.Logf("outbox_relay_sink_fenced_total after one incident: %v", m.GetCounter().GetValue())
}

// Review finding (fixed): the position counts events per Postgres transaction; when the
// set of events the relay maps from a re-sent transaction differs from the
// first time (a config change across a restart: --outboxes, --message-prefix),
// the count names other events: some are dropped as "already in Kafka"
// though they never were.
func TestChangedMappingIsRefusedNotSkipped(t *testing.T) {
	c := rvCluster(t)
	acks := &rvAcks{}
	tx := rvTxn(t, c, "outbox-relay-sys-s", "sys/s", time.Minute, acks)
	stop := runTxn(t, tx)
	// Transaction C holds rows a1, b1, a2, b2 of outboxes A and B; the
	// relay (with --outboxes A,B) is stopped gracefully after a1 and b1:
	// the position is (C, 2).
	for i, id := range []string{"a1", "b1"} {
		if err := tx.Produce(context.Background(), rvEvent(id, 100), uint64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	waitAcks(t, acks, 2)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// Restarted without outbox B: Postgres re-sends C whole; the relay now
	// maps a1, a2.
	acks2 := &rvAcks{}
	tx2 := rvTxn(t, c, "outbox-relay-sys-s", "sys/s", time.Minute, acks2)
	stop2 := runTxn(t, tx2)
	defer stop2()
	if err := tx2.Produce(context.Background(), rvEvent("a1", 100), 1); err != nil {
		t.Fatal(err)
	}
	err := tx2.Produce(context.Background(), rvEvent("a2", 100), 2)
	if !outboxrelay.IsConfigError(err) {
		t.Fatalf("a2, where the position counted b1: Produce returned %v, want a ConfigError naming the changed mapping", err)
	}
	t.Logf("refused: %v", err)
	if acks2.n() != 1 {
		t.Errorf("%d acks, want 1 (a1, which Kafka holds): a2 must not be acked", acks2.n())
	}
}

// Review finding (fixed): Produce takes t.mu without regard to ctx; while a commit waits
// for records sarama retries (a partition without enough replicas), a
// cancelled Produce (SIGTERM: stopFeed) does not return, so the session
// never reaches stopInOrder and its ShutdownTimeout.
func TestProduceGivesUpWhileACommitWaits(t *testing.T) {
	c := rvCluster(t)
	acks := &rvAcks{}
	tx := rvTxn(t, c, "outbox-relay-sys-s", "sys/s", 20*time.Second, acks)
	stop := runTxn(t, tx)
	defer stop()
	f := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: rvEvents, Err: kerr.NotEnoughReplicas, Count: -1})
	if err := tx.Produce(context.Background(), rvEvent("e1", 100), 1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a commit is now waiting for e1
	ctx, cancel := context.WithCancel(context.Background())
	ret := make(chan time.Time, 1)
	go func() {
		_ = tx.Produce(ctx, rvEvent("e2", 200), 2)
		ret <- time.Now()
	}()
	time.Sleep(100 * time.Millisecond)
	cancelled := time.Now()
	cancel()
	select {
	case at := <-ret:
		t.Logf("Produce returned %s after its ctx was cancelled", at.Sub(cancelled))
	case <-time.After(5 * time.Second):
		t.Errorf("Produce still blocked 5s after its ctx was cancelled (commit holds t.mu while sarama retries)")
		f.Remove()
		<-ret
		t.Logf("returned %s after cancel, once the partition came back", time.Since(cancelled))
		return
	}
	f.Remove()
}

// Review finding (fixed): NewTxn drops WithPanics: a panic sarama recovers on one of its
// goroutines (cmd sets sarama.PanicHandler = panics.Handle) ends no Txn, so
// the exactly-once producer is left without that goroutine.
func TestSaramaPanicEndsTxn(t *testing.T) {
	c := rvCluster(t)
	panics := NewPanics()
	cfg := DefaultConfig()
	cfg.Brokers = c.ListenAddrs()
	cfg.Transactions.Enabled, cfg.Transactions.ID, cfg.Transactions.PositionKey = true, "x", "sys/s"
	tx, err := NewTxn(cfg, func(uint64, error) {}, WithPanics(panics))
	if err != nil {
		t.Fatal(err)
	}
	stop := runTxn(t, tx)
	defer stop()
	panics.mu.Lock()
	n := len(panics.live)
	panics.mu.Unlock()
	panics.Handle("a panic on a sarama goroutine")
	select {
	case <-tx.stopped:
	case <-time.After(2 * time.Second):
		t.Errorf("Txn registered with Panics: %d sinks live; Run still running 2s after a sarama panic was reported", n)
	}
}

// A transaction that stays open on the offsets topic (another relay's that
// hangs) holds the start for positionWait at most: the relay then goes on
// with the position below it, which may send events again but loses none.
func TestStartGoesOnPastAHangingTransaction(t *testing.T) {
	c := rvCluster(t)
	other, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.TransactionalID("outbox-relay-other-s"),
		kgo.TransactionTimeout(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := other.ProduceSync(context.Background(), &kgo.Record{Topic: rvOffsets, Key: []byte("other/s"), Value: []byte(`{}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	tx := rvTxn(t, c, "outbox-relay-sys-s", "sys/s", time.Minute, &rvAcks{})
	started := time.Now()
	stop := runTxn(t, tx)
	defer stop()
	if took := time.Since(started); took < positionWait || took > positionWait+10*time.Second {
		t.Errorf("ready after %s; want it to wait %s for the open transaction, then go on", took, positionWait)
	}
}
