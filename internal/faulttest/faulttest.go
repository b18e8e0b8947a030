// Package faulttest holds the fault-injection suite's tools: an
// application-like write load that keeps writing through outages, and a
// check of what reached Kafka against what Postgres committed (missing
// events, duplicates, per-aggregate order). Its own tests inject faults
// into an in-process relay; internal/e2e kills the real binary.
package faulttest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

// AggregateTypes are the load's aggregate types; each is one topic.
var AggregateTypes = []string{"order", "payment"}

// Topics are the load's topics.
func Topics() []string { return relaytest.Topics(AggregateTypes...) }

// Written is one event whose transaction Postgres acknowledged.
type Written struct {
	ID          string
	AggregateID string
	Seq         int
	// After is pg_current_wal_insert_lsn() after the commit: at or past
	// the transaction's end LSN. (pg_current_wal_lsn() is not: with
	// synchronous_commit off it can lag behind a commit already returned.)
	After outboxrelay.LSN
	At    time.Time
}

// Load writes small transactions (1 to 8 events over 16 aggregates) from
// one goroutine, like an application, until Stop. A failed transaction
// (Postgres restarting) is retried after a short pause, with new sequence
// numbers: seq always grows in commit order.
type Load struct {
	env     *relaytest.Env
	cancel  context.CancelFunc
	done    chan struct{}
	pause   time.Duration
	started time.Time

	mu       sync.Mutex
	written  []Written
	failures int
}

// StartLoad starts writing. pause is the wait between transactions.
func StartLoad(env *relaytest.Env, pause time.Duration) *Load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{env: env, cancel: cancel, done: make(chan struct{}), pause: pause, started: time.Now()}
	go l.run(ctx)
	env.T.Cleanup(func() { l.Stop() })
	return l
}

// StartSteadyLoad writes rows-row transactions at rate events/s from one
// goroutine until Stop, as a busy application would: paced by a clock, not
// by each commit's reply (which StartLoad's pause comes on top of), each
// transaction one multi-row INSERT. A failed transaction (Postgres
// restarting) is not retried, and the pace restarts from the next
// success: no burst to catch up. A box too slow for the rate writes as
// fast as it can: Written and Started tell what it managed.
func StartSteadyLoad(env *relaytest.Env, rate, rows int) *Load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{env: env, cancel: cancel, done: make(chan struct{}), started: time.Now()}
	go l.runSteady(ctx, rate, rows)
	env.T.Cleanup(func() { l.Stop() })
	return l
}

func (l *Load) runSteady(ctx context.Context, rate, rows int) {
	defer close(l.done)
	interval := time.Duration(float64(time.Second) * float64(rows) / float64(rate))
	seq := 0
	next := time.Now()
	for ctx.Err() == nil {
		batch := make([]Written, rows)
		for i := range batch {
			batch[i] = Written{AggregateID: fmt.Sprintf("agg-%d", seq%16), Seq: seq}
			seq++
		}
		wait := time.Duration(0)
		if err := l.insertRows(batch); err != nil {
			l.mu.Lock()
			l.failures++
			l.mu.Unlock()
			next, wait = time.Now(), 20*time.Millisecond // Postgres is down: do not spin
		} else {
			next = next.Add(interval)
			wait = time.Until(next)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait): // the load's pace, not waiting for a result
		}
	}
}

// insertRows writes batch as one INSERT (one transaction).
func (l *Load) insertRows(batch []Written) error {
	tctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	types, aggs, seqs := make([]string, len(batch)), make([]string, len(batch)), make([]int32, len(batch))
	for i, w := range batch {
		types[i], aggs[i], seqs[i] = aggregateType(w.AggregateID), w.AggregateID, int32(w.Seq)
	}
	rows, err := l.env.Pool.Query(tctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
		SELECT t, a, 'Updated', jsonb_build_object('seq', s) FROM unnest($1::text[], $2::text[], $3::int[]) AS u(t, a, s)
		RETURNING id::text, (payload->>'seq')::int`, types, aggs, seqs)
	if err != nil {
		return err
	}
	ids := map[int]string{}
	for rows.Next() {
		var id string
		var seq int
		if err := rows.Scan(&id, &seq); err != nil {
			rows.Close()
			return err
		}
		ids[seq] = id
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i := range batch {
		batch[i].ID = ids[batch[i].Seq]
	}
	return l.acknowledged(tctx, batch)
}

// aggregateType spreads the aggregates over the load's types.
func aggregateType(aggregateID string) string {
	return AggregateTypes[int(aggregateID[len(aggregateID)-1])%len(AggregateTypes)]
}

// Started is when the load began writing.
func (l *Load) Started() time.Time { return l.started }

func (l *Load) run(ctx context.Context) {
	defer close(l.done)
	rng := rand.New(rand.NewPCG(7, 7))
	seq := 0
	for ctx.Err() == nil {
		n := 1 + rng.IntN(8)
		batch := make([]Written, n)
		for i := range batch {
			batch[i] = Written{AggregateID: fmt.Sprintf("agg-%d", rng.IntN(16)), Seq: seq}
			seq++
		}
		if err := l.insert(batch); err != nil {
			l.mu.Lock()
			l.failures++
			l.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(l.pause): // the load's pace, not waiting for a result
		}
	}
}

// insert runs one transaction. Stop does not cancel it: a commit cut off
// mid-way would leave the load unsure whether it happened.
func (l *Load) insert(batch []Written) error {
	tctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := pgx.BeginFunc(tctx, l.env.Pool, func(tx pgx.Tx) error {
		for i := range batch {
			w := &batch[i]
			if err := tx.QueryRow(tctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
				VALUES ($1, $2, 'Updated', jsonb_build_object('seq', $3::int)) RETURNING id::text`,
				aggregateType(w.AggregateID), w.AggregateID, w.Seq).Scan(&w.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return l.acknowledged(tctx, batch)
}

// acknowledged adds a committed transaction's events to Written.
func (l *Load) acknowledged(ctx context.Context, batch []Written) error {
	after, err := insertLSN(ctx, l.env)
	if err != nil {
		return err
	}
	now := time.Now()
	l.mu.Lock()
	for _, w := range batch {
		w.After, w.At = after, now
		l.written = append(l.written, w)
	}
	l.mu.Unlock()
	return nil
}

// Written returns the events acknowledged so far.
func (l *Load) Written() []Written {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Written(nil), l.written...)
}

// Failures is the number of transactions that failed (and were retried).
func (l *Load) Failures() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failures
}

// WaitWritten polls until at least n events are acknowledged.
func (l *Load) WaitWritten(ctx context.Context, t testing.TB, n int) {
	t.Helper()
	var got int
	if !eventually.True(ctx, 10*time.Millisecond, func() bool {
		l.mu.Lock()
		got = len(l.written)
		l.mu.Unlock()
		return got >= n
	}) {
		t.Fatalf("load wrote %d events, want %d: %v", got, n, ctx.Err())
	}
}

// Stop stops writing and returns every acknowledged event. It is
// idempotent.
func (l *Load) Stop() []Written {
	l.cancel()
	<-l.done
	return l.Written()
}

// Report is what reached Kafka compared with what Postgres committed.
type Report struct {
	Written    int // rows in the outbox table
	Delivered  int // distinct ids among them found in Kafka
	Missing    int
	Duplicates int // records beyond the first for an id
	// Dups counts the extra copies of each duplicated id.
	Dups map[string]int
	// Extra are the records beyond the first for an id, where each is in
	// Kafka (its offset says when it was appended, relative to the high
	// watermarks read at a fault: kafkatest.EndOffsets).
	Extra []Copy
	// Reordered describes aggregates whose events were first delivered
	// out of commit order.
	Reordered []string
}

// Copy is one record of an event in Kafka.
type Copy struct {
	ID        string
	Topic     string
	Partition int32
	Offset    int64
}

// Verify waits until the slot has confirmed everything written, then reads
// the load's topics and compares them with the outbox table, the ground
// truth: a transaction whose commit reply was lost in a crash may still
// have committed. It fails the test for a missing event, a record that is
// not in the table, or an aggregate whose events' first occurrences are
// out of commit order.
func Verify(ctx context.Context, t testing.TB, env *relaytest.Env, slot string) Report {
	t.Helper()
	rep := VerifyUnordered(ctx, t, env, slot)
	for _, r := range rep.Reordered {
		t.Errorf("commit order broken: %s", r)
	}
	return rep
}

// VerifyUnordered is Verify without failing on order: the caller decides.
func VerifyUnordered(ctx context.Context, t testing.TB, env *relaytest.Env, slot string) Report {
	t.Helper()
	waitAllConfirmed(ctx, t, env, slot)
	rows := outboxRows(ctx, t, env)

	total, err := kafkatest.Count(ctx, env.Kafka.Addrs(), Topics())
	if err != nil {
		t.Fatal(err)
	}
	recs, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), Topics(), int(total))
	if err != nil {
		t.Fatal(err)
	}
	return compare(t, rows, recs)
}

// VerifyCommitted is Verify for a relay writing in Kafka transactions: it
// reads what a read_committed consumer sees (transaction markers take
// offsets, so the high watermarks do not count records).
func VerifyCommitted(ctx context.Context, t testing.TB, env *relaytest.Env, slot string) Report {
	t.Helper()
	waitAllConfirmed(ctx, t, env, slot)
	rows := outboxRows(ctx, t, env)
	recs, err := kafkatest.ReadCommitted(ctx, env.Kafka.Addrs(), Topics())
	if err != nil {
		t.Fatal(err)
	}
	rep := compare(t, rows, recs)
	for _, r := range rep.Reordered {
		t.Errorf("commit order broken: %s", r)
	}
	return rep
}

// row is an outbox row as the checks see it.
type row struct {
	agg string
	seq int
}

// outboxRows reads the load's rows, the ground truth.
func outboxRows(ctx context.Context, t testing.TB, env *relaytest.Env) map[string]row {
	t.Helper()
	rows := map[string]row{}
	q, err := env.Pool.Query(ctx, `SELECT id::text, aggregate_type || '/' || aggregate_id, (payload->>'seq')::int FROM outbox
		WHERE aggregate_type = ANY($1)`, AggregateTypes)
	if err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	for q.Next() {
		var id string
		var r row
		if err := q.Scan(&id, &r.agg, &r.seq); err != nil {
			t.Fatalf("read outbox: %v", err)
		}
		rows[id] = r
	}
	if err := q.Err(); err != nil {
		t.Fatalf("read outbox: %v", err)
	}

	return rows
}

// compare checks the records read against the outbox rows.
func compare(t testing.TB, rows map[string]row, recs []kafkatest.Record) Report {
	t.Helper()
	rep := Report{Written: len(rows), Dups: map[string]int{}}
	seen := map[string]bool{}
	lastSeq := map[string]int{} // aggregate -> seq of its last first occurrence
	for _, r := range recs {    // sorted by topic, partition, offset
		id := r.Headers["id"]
		want, ok := rows[id]
		if !ok {
			t.Fatalf("record %s/%d@%d has id %q, which is not in the outbox table", r.Topic, r.Partition, r.Offset, id)
		}
		if seen[id] {
			rep.Duplicates++
			rep.Dups[id]++
			rep.Extra = append(rep.Extra, Copy{ID: id, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset})
			continue
		}
		seen[id] = true
		if prev, ok := lastSeq[want.agg]; ok && want.seq < prev {
			rep.Reordered = append(rep.Reordered, fmt.Sprintf("aggregate %s: seq %d first delivered after seq %d (offset %d)",
				want.agg, want.seq, prev, r.Offset))
		}
		lastSeq[want.agg] = want.seq
	}
	rep.Delivered = len(seen)
	var missing []string
	for id, r := range rows {
		if !seen[id] {
			missing = append(missing, fmt.Sprintf("%s(seq %d)", id, r.seq))
		}
	}
	rep.Missing = len(missing)
	if len(missing) > 0 {
		t.Errorf("%d committed events missing from Kafka, e.g. %s", len(missing), strings.Join(missing[:min(5, len(missing))], ", "))
	}
	return rep
}

// CheckAcknowledged fails the test if an event whose commit Postgres
// acknowledged is not in the outbox table (a sanity check of the load).
func CheckAcknowledged(ctx context.Context, t testing.TB, env *relaytest.Env, written []Written) {
	t.Helper()
	ids := make([]string, len(written))
	for i, w := range written {
		ids[i] = w.ID
	}
	var n int
	if err := env.Pool.QueryRow(ctx, "SELECT count(*) FROM outbox WHERE id::text = ANY($1)", ids).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(ids) {
		t.Fatalf("%d of %d acknowledged events are in the outbox table", n, len(ids))
	}
}

// Log prints the report as one line the closing table is built from.
func (r Report) Log(t testing.TB, fault string, recovery time.Duration) {
	t.Helper()
	t.Logf("RESULT fault=%q written=%d delivered=%d missing=%d duplicates=%d reordered=%d recovery=%s",
		fault, r.Written, r.Delivered, r.Missing, r.Duplicates, len(r.Reordered), recovery.Round(time.Millisecond))
}

// CatchUp measures how long the slot takes to confirm everything written
// up to now: the recovery time after a fault ends.
func CatchUp(ctx context.Context, t testing.TB, env *relaytest.Env, slot string, since time.Time) time.Duration {
	t.Helper()
	waitAllConfirmed(ctx, t, env, slot)
	return time.Since(since)
}

// waitAllConfirmed waits until the slot has confirmed every transaction
// committed so far.
func waitAllConfirmed(ctx context.Context, t testing.TB, env *relaytest.Env, slot string) {
	t.Helper()
	lsn, err := insertLSN(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	env.WaitConfirmed(ctx, slot, lsn)
}

func insertLSN(ctx context.Context, env *relaytest.Env) (outboxrelay.LSN, error) {
	var s string
	if err := env.Pool.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
		return 0, fmt.Errorf("read WAL insert position: %w", err)
	}
	return pglogrepl.ParseLSN(s)
}
