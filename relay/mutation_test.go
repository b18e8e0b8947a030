package relay_test

// Tests that pin the relay's promise against bugs that once passed the
// whole suite when introduced on purpose (issue 8, "The suite catches the
// bugs it exists for"). Each names the bug it fails on; each fails fast,
// at the first sample that breaks the promise, rather than through a
// timeout.

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/relay"
)

func TestDeadLetterCopyHoldsTheSlotUntilAcked(t *testing.T) {
	// Pins a refused event counted done when it was queued for its
	// dead-letter copy instead of when the copy was acked: with the
	// dead-letter topic itself failing, the slot moved past the refused
	// event, and a crash then lost it from both topics.
	kafkatest.RequireKfake(t, "produce faults: authorization refused on one topic, NOT_ENOUGH_REPLICAS on the dead-letter topic")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2})
	cfg := env.Config()
	cfg.Relay.OnUndeliverable = relay.DeadLetter
	c := env.Kafka.Cluster()
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "outbox.event.forbidden", Err: kerr.TopicAuthorizationFailed, Count: -1})
	dlDown := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: cfg.Relay.DeadLetterTopic, Err: kerr.NotEnoughReplicas, Count: -1})
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)

	env.Insert(ctx, mutOrders(0, 3))
	poison, pastPoison := env.Insert(ctx, []relaytest.Event{
		mutOrder(3), {AggregateType: "forbidden", AggregateID: "agg-0", EventType: "Poison", Seq: 4}, mutOrder(5),
	})
	_, end := env.Insert(ctx, mutOrders(6, 3))

	// Every good event is acked and the copy has been retried a few times:
	// only the copy holds the slot back now.
	orders := relaytest.Topics("order")
	mutHoldBelow(ctx, t, env, run, pastPoison, time.Second, func() bool {
		return dlDown.Hits() >= 3 && mutCount(ctx, t, env, orders) >= 8
	}, "the refused event's dead-letter copy is not acked (the dead-letter topic fails retriably)")

	dlDown.Remove()
	env.WaitConfirmed(ctx, env.Slot, end)
	dead, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), []string{cfg.Relay.DeadLetterTopic}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if id := poison[1].ID; len(dead) != 1 || dead[0].Headers[relay.HeaderID] != id {
		t.Fatalf("dead-letter topic holds %d records (%v), want the copy of %s", len(dead), dead, id)
	}
}

func TestSlotNeverPassesTheCheckpointRecord(t *testing.T) {
	// Pins the slot confirmed before the durable checkpoint record is
	// written: when the write failed, the stream had already sent the
	// position, so the slot stood past the record, gap detection was blind
	// to that stretch, and the next start refused with a false gap.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{})
	cfg := env.Config()
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	_, first := env.Insert(ctx, mutOrders(0, 1))
	env.WaitConfirmed(ctx, env.Slot, first)
	mutWaitRecord(ctx, t, env, first)

	mustExec(ctx, t, env, `CREATE FUNCTION outbox_relay.refuse_checkpoint() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'checkpoint record write refused by the test'; END $$;
		CREATE TRIGGER refuse_checkpoint BEFORE UPDATE ON outbox_relay.checkpoint
		FOR EACH ROW EXECUTE FUNCTION outbox_relay.refuse_checkpoint()`)
	_, end := env.Insert(ctx, mutOrders(1, 5))

	// Sample slot first, record second (the order gap detection reads
	// them in): the record only rises, so a slot past a record read after
	// it was confirmed before the record covered it.
	topics := relaytest.Topics("order")
	var readyAt time.Time
	if !eventually.True(ctx, 10*time.Millisecond, func() bool {
		slot := env.Confirmed(ctx, env.Slot)
		if rec := mutRecord(ctx, t, env); slot > rec {
			t.Fatalf("slot confirmed %s, past the checkpoint record %s: confirmed before the record was written", slot, rec)
		}
		select {
		case <-run.Done():
			t.Fatalf("relay stopped while the record could not be written: %v", run.Err())
		default:
		}
		if readyAt.IsZero() && run.Metric("outbox_relay_reconnects_total") >= 2 && mutCount(ctx, t, env, topics) >= 6 {
			readyAt = time.Now() // record writes failed twice, with events acked to confirm
		}
		return !readyAt.IsZero() && time.Since(readyAt) >= 500*time.Millisecond
	}) {
		t.Fatalf("the relay never failed to write the record with events acked (reconnects %v)", run.Metric("outbox_relay_reconnects_total"))
	}

	mustExec(ctx, t, env, "DROP TRIGGER refuse_checkpoint ON outbox_relay.checkpoint")
	env.WaitConfirmed(ctx, env.Slot, end)
	if rec := mutRecord(ctx, t, env); rec < env.Confirmed(ctx, env.Slot) {
		t.Fatalf("record %s behind the slot once the writes succeed again", rec)
	}
}

func TestDropColumnBeforePayloadMidStream(t *testing.T) {
	// Pins a second Relation message for the outbox ignored (or its column
	// positions kept): dropping a column in front of the payload shifted
	// every later column, and the relay then sent another column's value
	// as the payload, or stopped at a row it thought had a NULL payload.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{})
	mustExec(ctx, t, env, `DROP TABLE outbox; CREATE TABLE outbox (
		id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
		aggregate_type text        NOT NULL,
		aggregate_id   text        NOT NULL,
		legacy_a       text        DEFAULT 'a',
		event_type     text        NOT NULL,
		legacy_b       text        DEFAULT 'b',
		payload        jsonb       NOT NULL,
		headers        jsonb,
		created_at     timestamptz NOT NULL DEFAULT now())`)
	run := relaytest.Start(t, env.Config())
	run.WaitReady(ctx, t)

	seq := 0
	batch := func() []relaytest.Event {
		evs := make([]relaytest.Event, 2)
		for i := range evs {
			evs[i] = relaytest.Event{AggregateType: "order", AggregateID: "x", EventType: fmt.Sprintf("Type%d", seq), Seq: seq,
				Headers: map[string]string{"traceparent": fmt.Sprintf("00-%032x-%016x-01", seq+1, seq+1)}}
			seq++
		}
		return evs
	}
	var want []relaytest.Inserted
	ins, _ := env.Insert(ctx, batch())
	want = append(want, ins...)
	// One column fewer in front of event_type and payload.
	mustExec(ctx, t, env, "ALTER TABLE outbox DROP COLUMN legacy_a")
	ins, _ = env.Insert(ctx, batch())
	want = append(want, ins...)
	// As many columns as before, in other places: only the new Relation
	// message's names say where the payload is.
	mustExec(ctx, t, env, "ALTER TABLE outbox DROP COLUMN legacy_b, ADD COLUMN trailer text DEFAULT 't'")
	ins, last := env.Insert(ctx, batch())
	want = append(want, ins...)

	recs, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), relaytest.Topics("order"), len(want))
	if err != nil {
		select {
		case <-run.Done():
			t.Fatalf("%v; the relay stopped: %v", err, run.Err())
		default:
			t.Fatal(err)
		}
	}
	for i, w := range want {
		r := recs[i]
		if string(r.Key) != w.ID || string(r.Value) != w.Payload || r.Headers["event_type"] != w.EventType ||
			r.Headers["traceparent"] != w.Headers["traceparent"] {
			t.Errorf("record %d = key %s value %s headers %v; want %s %s event_type %s traceparent %s",
				i, r.Key, r.Value, r.Headers, w.ID, w.Payload, w.EventType, w.Headers["traceparent"])
		}
	}
	if got := run.Metric("outbox_relay_reconnects_total"); got != 0 {
		t.Errorf("%v reconnects: a schema change must not fail the session", got)
	}
	if t.Failed() {
		t.FailNow()
	}
	env.WaitConfirmed(ctx, env.Slot, last)
}

func TestHeadersColumnCannotForgeReservedHeaders(t *testing.T) {
	// Pins a headers-column entry named like a header the relay sets (id,
	// event_type, aggregate_*): it was added as a second copy, or replaced
	// the relay's, so a consumer deduping on `id` saw a row pose as
	// another event.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{})
	run := relaytest.Start(t, env.Config())
	run.WaitReady(ctx, t)
	forged := map[string]string{
		"id": "00000000-0000-0000-0000-000000000001", "event_type": "Forged",
		"aggregate_type": "forged", "aggregate_id": "forged", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	}
	ins, _ := env.Insert(ctx, []relaytest.Event{
		{AggregateType: "order", AggregateID: "o-1", EventType: "Created", Seq: 0, Headers: forged},
		{AggregateType: "order", AggregateID: "o-1", EventType: "Updated", Seq: 1, Headers: map[string]string{"tenant": "t-1"}},
	})
	recs := map[string]*kgo.Record{}
	for _, r := range mutReadRaw(ctx, t, env.Kafka.Addrs(), "outbox.event.order", len(ins)) {
		recs[string(r.Key)] = r
	}
	for _, w := range ins {
		r, ok := recs[w.ID]
		if !ok {
			t.Fatalf("event %s not delivered under its id", w.ID)
		}
		got := map[string][]string{}
		for _, h := range r.Headers {
			got[h.Key] = append(got[h.Key], string(h.Value))
		}
		for key, value := range map[string]string{"id": w.ID, "event_type": w.EventType, "aggregate_type": w.AggregateType, "aggregate_id": w.AggregateID} {
			if len(got[key]) != 1 || got[key][0] != value {
				t.Errorf("record %s: header %q = %q, want exactly one, %q, from the row's column", w.ID, key, got[key], value)
			}
		}
		for key, value := range w.Headers {
			if key == "id" || key == "event_type" || key == "aggregate_type" || key == "aggregate_id" {
				continue
			}
			if len(got[key]) != 1 || got[key][0] != value {
				t.Errorf("record %s: header %q = %q, want %q from the headers column", w.ID, key, got[key], value)
			}
		}
	}
}

func TestProduceFailureAfterRetriesReconnects(t *testing.T) {
	// Pins a retriable produce error left after the producer's retries
	// counted as an ack (or as done while the session fails): the slot
	// moved past the failed event, which was never sent again. With few
	// retries and an outage longer than they last, the relay must end the
	// session, reconnect from the slot, and deliver the event afterwards.
	kafkatest.RequireKfake(t, "a produce fault on one topic")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2})
	cfg := env.Config()
	cfg.Sink.RetryMax = 2
	cfg.Sink.RetryBackoff = 20 * time.Millisecond
	cfg.Sink.RetryBackoffMax = 50 * time.Millisecond
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	_, before := env.Insert(ctx, mutOrders(0, 1))
	env.WaitConfirmed(ctx, env.Slot, before)

	outage := env.Kafka.Cluster().Fault(kfake.Fault{
		Keys: []kmsg.Key{kmsg.Produce}, Topic: "outbox.event.payment", Err: kerr.NotEnoughReplicas, Count: -1,
	})
	payment, pastPayment := env.Insert(ctx, []relaytest.Event{{AggregateType: "payment", AggregateID: "p-1", EventType: "Charged", Seq: 1}})
	var end outboxrelay.LSN
	for i := 2; i < 7; i++ {
		_, end = env.Insert(ctx, mutOrders(i, 1))
	}
	mutHoldBelow(ctx, t, env, run, pastPayment, 300*time.Millisecond, func() bool {
		return run.Metric("outbox_relay_reconnects_total") >= 2 && mutCount(ctx, t, env, relaytest.Topics("order")) >= 6
	}, "the payment event failed after the producer's retries and was never acked")

	outage.Remove()
	env.WaitConfirmed(ctx, env.Slot, end)
	recs := readEverything(ctx, t, env, relaytest.Topics("payment"))
	if len(recs) == 0 || string(recs[len(recs)-1].Key) != payment[0].ID {
		t.Fatalf("payment event %s not delivered after the outage (payment topic: %d records)", payment[0].ID, len(recs))
	}
	t.Logf("outage of %d produce attempts, %v reconnects", outage.Hits(), run.Metric("outbox_relay_reconnects_total"))
}

func TestKeepaliveInsideLargeTransactionIsNoBarrier(t *testing.T) {
	// Pins a keepalive received inside a transaction treated as a barrier:
	// its WAL end lies past rows of that transaction not yet acked, so the
	// slot was confirmed past them while they were in flight.
	kafkatest.RequireKfake(t, "a broker that answers produce requests slowly")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2})
	cfg := env.Config()
	cfg.Relay.MaxInFlight = 5
	cfg.Replication.StatusInterval = 20 * time.Millisecond
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	// The rows and the position after the last of them, read in the
	// transaction's only statement: the commit record is the next thing
	// the transaction writes.
	mustExec(ctx, t, env, `CREATE FUNCTION insert_bulk(n int, pad int) RETURNS text LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
			SELECT 'bulk', 'agg-' || (g % 7), 'Imported', jsonb_build_object('n', g, 'pad', repeat(md5(g::text), pad / 32))
			FROM generate_series(1, n) g;
			RETURN pg_current_wal_insert_lsn()::text;
		END $$`)
	slow := mutSlowBroker(env.Kafka.Cluster(), 5*time.Millisecond)
	defer slow()

	// Large rows fill the socket between Postgres and the relay, so the
	// server sends keepalives while it is still writing the transaction.
	const rows = 300
	var s string
	if err := env.Pool.QueryRow(ctx, "SELECT insert_bulk($1, 64 << 10)", rows).Scan(&s); err != nil {
		t.Fatal(err)
	}
	lastRow, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	end := env.CurrentLSN(ctx)
	topics := relaytest.Topics("bulk")
	statusBefore := run.Metric("outbox_relay_replication_status_updates_total")
	var n int64
	beforeRows := false
	if !eventually.True(ctx, 5*time.Millisecond, func() bool {
		// The slot first: a count read after it that is short of the rows
		// proves a row was unacked when the slot was read.
		got := env.Confirmed(ctx, env.Slot)
		if n = mutCount(ctx, t, env, topics); n >= rows {
			return true
		}
		// A keepalive sent while the walsender has read the rows but not
		// yet the commit record carries lastRow too, and confirming it is
		// safe: the transaction commits after it, so Postgres still sends
		// it. Seen first with no row acked, that is what happened (a
		// keepalive taken as a barrier inside the transaction is only
		// released once the rows before it are acked).
		if got >= lastRow && n == 0 && !beforeRows {
			beforeRows = true
			t.Logf("slot confirmed %s before any row was acked: a keepalive from before the commit", got)
		}
		if got > lastRow || got == lastRow && !beforeRows {
			t.Fatalf("slot confirmed %s, past the transaction's rows (the last ends at %s) with only %d of %d acked",
				got, lastRow, n, rows)
		}
		return false
	}) {
		t.Fatalf("only %d of %d rows reached Kafka", n, rows)
	}
	env.WaitConfirmed(ctx, env.Slot, end)
	if sent := run.Metric("outbox_relay_replication_status_updates_total") - statusBefore; sent < 5 {
		t.Fatalf("only %v status updates while the transaction was delivered: the test did not exercise keepalives", sent)
	}
	if peak := run.Metric("outbox_relay_inflight_peak_events"); peak != float64(cfg.Relay.MaxInFlight) {
		t.Fatalf("in-flight peak %v, want the cap %d: the reader was not held back", peak, cfg.Relay.MaxInFlight)
	}
}

func TestGracefulStopDrainsInFlightEvents(t *testing.T) {
	// Pins a shutdown that stops without waiting for in-flight acks: the
	// final status update then carried a position behind events Kafka had
	// (or was about to have), and every deploy resent them.
	kafkatest.RequireKfake(t, "a broker that answers produce requests slowly")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2})
	cfg := env.Config()
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	slow := mutSlowBroker(env.Kafka.Cluster(), 150*time.Millisecond)
	defer slow()

	const txns = 10
	lsns := make([]outboxrelay.LSN, txns)
	for i := range txns {
		_, lsns[i] = env.Insert(ctx, mutOrders(i, 1))
	}
	if !eventually.True(ctx, 2*time.Millisecond, func() bool { return run.Metric("outbox_relay_events_received_total") >= txns }) {
		t.Fatalf("the relay received %v of %d events", run.Metric("outbox_relay_events_received_total"), txns)
	}
	if acked := run.Metric("outbox_relay_events_acked_total"); acked >= txns {
		t.Fatalf("all %v events acked before the stop: the broker was not slow enough to test the drain", acked)
	}
	if err := run.Stop(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	// The last event was received, so the commit before it was too: the
	// drained relay confirms at least the end of that transaction, which
	// lies past the position read before it was written.
	if got, want := env.Confirmed(ctx, env.Slot), lsns[txns-3]; got <= want {
		t.Fatalf("slot at %s after a graceful stop, not past %s (read before the last two transactions, both received): in-flight acks were not drained",
			got, want)
	}
	if n := mutCount(ctx, t, env, relaytest.Topics("order")); n < txns {
		t.Fatalf("%d of %d events in Kafka after a graceful stop", n, txns)
	}
}

// mutOrder is one order event; mutOrders is n of them from seq on.
func mutOrder(seq int) relaytest.Event {
	return relaytest.Event{AggregateType: "order", AggregateID: fmt.Sprintf("agg-%d", seq%3), EventType: "Updated", Seq: seq}
}

func mutOrders(from, n int) []relaytest.Event {
	evs := make([]relaytest.Event, n)
	for i := range evs {
		evs[i] = mutOrder(from + i)
	}
	return evs
}

// mutHoldBelow samples the slot every 10 ms and fails the test as soon as
// its confirmed_flush_lsn reaches limit (why says what holds it back) or
// the relay stops. It returns once ready has been true for hold: long
// enough for several status updates to have carried any wrong position.
func mutHoldBelow(ctx context.Context, t *testing.T, env *relaytest.Env, run *relaytest.Running, limit outboxrelay.LSN,
	hold time.Duration, ready func() bool, why string) {
	t.Helper()
	var readyAt time.Time
	if !eventually.True(ctx, 10*time.Millisecond, func() bool {
		if got := env.Confirmed(ctx, env.Slot); got >= limit {
			t.Fatalf("slot confirmed %s, at or past %s although %s", got, limit, why)
		}
		select {
		case <-run.Done():
			t.Fatalf("relay stopped: %v", run.Err())
		default:
		}
		if readyAt.IsZero() && ready() {
			readyAt = time.Now()
		}
		return !readyAt.IsZero() && time.Since(readyAt) >= hold
	}) {
		t.Fatalf("the fault was never in place with later events acked (%s)", why)
	}
}

// mutCount is kafkatest.Count, failing the test on error.
func mutCount(ctx context.Context, t *testing.T, env *relaytest.Env, topics []string) int64 {
	t.Helper()
	n, err := kafkatest.Count(ctx, env.Kafka.Addrs(), topics)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// mutRecord is the position in the relay's checkpoint record, 0 if none.
func mutRecord(ctx context.Context, t *testing.T, env *relaytest.Env) outboxrelay.LSN {
	t.Helper()
	var s string
	err := env.Pool.QueryRow(ctx, "SELECT lsn::text FROM outbox_relay.checkpoint WHERE slot = $1", env.Slot).Scan(&s)
	if err == pgx.ErrNoRows {
		return 0
	}
	if err != nil {
		t.Fatalf("read the checkpoint record: %v", err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

func mutWaitRecord(ctx context.Context, t *testing.T, env *relaytest.Env, want outboxrelay.LSN) {
	t.Helper()
	if !eventually.True(ctx, 10*time.Millisecond, func() bool { return mutRecord(ctx, t, env) >= want }) {
		t.Fatalf("checkpoint record never reached %s", want)
	}
}

// mutSlowBroker delays every produce request by d until the returned func
// is called.
func mutSlowBroker(c *kfake.Cluster, d time.Duration) (stop func()) {
	var off atomic.Bool
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !off.Load() {
			c.SleepControl(func() { time.Sleep(d) }) // the broker's slowness
		}
		return nil, nil, false // then answer normally
	})
	return func() { off.Store(true) }
}

// mutReadRaw reads n records of topic from the start with their headers as
// sent (kafkatest.Record keeps one value per header key).
func mutReadRaw(ctx context.Context, t *testing.T, addrs []string, topic string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for len(recs) < n {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records from %s", len(recs), n, topic)
		}
		fetches.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	if len(recs) != n {
		var keys []string
		for _, r := range recs {
			keys = append(keys, string(r.Key))
		}
		t.Fatalf("%d records in %s, want %d: %s", len(recs), topic, n, strings.Join(keys, ", "))
	}
	return recs
}
