package relay_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

func TestNeverConfirmsAheadOfBroker(t *testing.T) {
	// Pins the bug that lost data in go-pq-cdc#107 and Conduit#313: a
	// keepalive's WAL end (or a later commit) confirmed while an earlier
	// event was still unacked.
	kafkatest.RequireKfake(t, "a produce fault on one topic")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2})
	cfg := env.Config()
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	if _, err := env.Pool.Exec(ctx, "CREATE TABLE busy (id bigserial, pad text)"); err != nil {
		t.Fatal(err)
	}

	_, before := env.Insert(ctx, []relaytest.Event{{AggregateType: "order", AggregateID: "o1", EventType: "Created", Seq: 0}})
	env.WaitConfirmed(ctx, cfg.Replication.Slot, before)

	fault := env.Kafka.Cluster().Fault(kfake.Fault{
		Keys: []kmsg.Key{kmsg.Produce}, Topic: "outbox.event.payment", Err: kerr.NotEnoughReplicas, Count: -1,
	})
	// The barrier: a position inside the payment transaction, before its
	// commit. The slot must not reach it while the payment is unacked.
	var barrier pglogrepl.LSN
	err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
			VALUES ('payment', 'p1', 'Charged', '{"seq": 1}')`); err != nil {
			return err
		}
		var s string
		if err := tx.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
			return err
		}
		var perr error
		barrier, perr = pglogrepl.ParseLSN(s)
		return perr
	})
	if err != nil {
		t.Fatal(err)
	}

	// Later transactions (acked, on another topic) and unrelated WAL with
	// keepalives between them: none may carry the slot past the payment.
	statusBefore := run.Metric("outbox_relay_replication_status_updates_total")
	var last pglogrepl.LSN
	var later []relaytest.Inserted
	for i := 2; i < 40; i++ {
		var ins []relaytest.Inserted
		ins, last = env.Insert(ctx, []relaytest.Event{{AggregateType: "order", AggregateID: "o1", EventType: "Updated", Seq: i}})
		later = append(later, ins...)
		if _, err := env.Pool.Exec(ctx, "INSERT INTO busy (pad) SELECT repeat('x', 200) FROM generate_series(1, 500)"); err != nil {
			t.Fatal(err)
		}
		if got := env.Confirmed(ctx, cfg.Replication.Slot); got >= barrier {
			t.Fatalf("slot confirmed %s, at or past the unacked payment event (%s)", got, barrier)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if got := env.Confirmed(ctx, cfg.Replication.Slot); got >= barrier {
			t.Fatalf("slot confirmed %s, at or past the unacked payment event (%s)", got, barrier)
		}
		time.Sleep(20 * time.Millisecond) // sampling the slot, not waiting for a result
	}
	if fault.Hits() == 0 {
		t.Fatal("the fault never fired: the test did not exercise a refused produce")
	}
	if run.Metric("outbox_relay_replication_status_updates_total") <= statusBefore {
		t.Fatal("no status updates were sent during the fault window")
	}

	fault.Remove()
	env.WaitConfirmed(ctx, cfg.Replication.Slot, last)
	recs := readEverything(ctx, t, env, relaytest.Topics("order", "payment"))
	seen := map[string]bool{}
	for _, r := range recs {
		seen[r.Topic+string(r.Value)] = true
	}
	if !seen[`outbox.event.payment{"seq": 1}`] {
		t.Fatal("payment event missing after the fault cleared")
	}
	for _, w := range later {
		if !seen["outbox.event.order"+w.Payload] {
			t.Fatalf("order event %d missing after the fault cleared", w.Seq)
		}
	}
}

// waitCount polls until the topics hold at least n records.
func waitCount(ctx context.Context, t *testing.T, env *relaytest.Env, topics []string, n int64, before string) {
	t.Helper()
	var got int64
	if !eventually.True(ctx, 2*time.Millisecond, func() bool {
		var err error
		if got, err = kafkatest.Count(ctx, env.Kafka.Addrs(), topics); err != nil {
			t.Fatal(err)
		}
		return got >= n
	}) {
		t.Fatalf("only %d events reached Kafka before %s", got, before)
	}
}

// readEverything reads every record now in the topics. Call it once the
// slot has confirmed past the last write: then all events are in Kafka.
func readEverything(ctx context.Context, t *testing.T, env *relaytest.Env, topics []string) []kafkatest.Record {
	t.Helper()
	n, err := kafkatest.Count(ctx, env.Kafka.Addrs(), topics)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), topics, int(n))
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestCrashRestartLosesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 3})
	slot := env.Config().Replication.Slot
	relayA := startChild(t, env)
	// Rows committed before the slot exists are not in its stream.
	waitSlotActive(ctx, t, env, slot, true)

	type txn struct {
		ids []string
		lsn pglogrepl.LSN
	}
	var (
		mu   sync.Mutex
		txns []txn
	)
	const total = 3000
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for seq := 0; seq < total; seq += 10 {
			batch := make([]relaytest.Event, 10)
			for i := range batch {
				batch[i] = relaytest.Event{AggregateType: "order", AggregateID: fmt.Sprintf("a%d", (seq+i)%17), EventType: "E", Seq: seq + i}
			}
			ins, lsn := env.Insert(ctx, batch)
			tx := txn{lsn: lsn}
			for _, in := range ins {
				tx.ids = append(tx.ids, in.ID)
			}
			mu.Lock()
			txns = append(txns, tx)
			mu.Unlock()
		}
	}()

	topics := relaytest.Topics("order")
	waitCount(ctx, t, env, topics, 500, "the crash point")
	relayA.kill()
	// After the kill the walsender exits; what the slot holds now is the
	// last status the dead relay sent.
	waitSlotActive(ctx, t, env, slot, false)
	confirmedAtCrash := env.Confirmed(ctx, slot)
	deliveredAtCrash, _ := kafkatest.Count(ctx, env.Kafka.Addrs(), topics)

	startChild(t, env)
	<-writerDone
	env.WaitConfirmed(ctx, slot, txns[len(txns)-1].lsn)
	recs := readEverything(ctx, t, env, topics)
	seen := map[string]int{}
	for _, r := range recs {
		seen[string(r.Key)]++
	}
	dups := 0
	for _, tx := range txns {
		for _, id := range tx.ids {
			switch c := seen[id]; {
			case c == 0:
				t.Fatalf("event %s (txn ending by %s) lost across the crash (confirmed at crash %s; %d records, %d distinct)",
					id, tx.lsn, confirmedAtCrash, len(recs), len(seen))
			case c > 1:
				dups += c - 1
				if tx.lsn <= confirmedAtCrash {
					t.Fatalf("event %s resent although its transaction (ending by %s) was confirmed (%s) before the crash", id, tx.lsn, confirmedAtCrash)
				}
			}
		}
	}
	t.Logf("crash after %d delivered events, confirmed %s: %d written, %d records, %d duplicates (all from the unconfirmed tail)",
		deliveredAtCrash, confirmedAtCrash, total, len(recs), dups)
}

func waitSlotActive(ctx context.Context, t *testing.T, env *relaytest.Env, slot string, want bool) {
	t.Helper()
	if !eventually.True(ctx, 10*time.Millisecond, func() bool {
		var active bool
		err := env.Pool.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active)
		if err != nil && err != pgx.ErrNoRows {
			t.Fatal(err)
		}
		return active == want && err == nil
	}) {
		t.Fatalf("slot %s never became active=%v", slot, want)
	}
}

func TestIdleOutboxConfirmsBusyWAL(t *testing.T) {
	// Pins the idle-WAL bug Debezium, Redpanda Connect and Supabase ETL
	// shipped: with a quiet outbox on a busy database, a relay that
	// confirms only at outbox commits pins WAL forever.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{})
	cfg := env.Config()
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	if _, err := env.Pool.Exec(ctx, "CREATE TABLE busy (id bigserial, pad text)"); err != nil {
		t.Fatal(err)
	}
	start := env.Confirmed(ctx, cfg.Replication.Slot)
	for i := 0; i < 20; i++ {
		if _, err := env.Pool.Exec(ctx, "INSERT INTO busy (pad) SELECT repeat('x', 500) FROM generate_series(1, 2000)"); err != nil {
			t.Fatal(err)
		}
	}
	// An operator's heartbeat: it moves WAL and must never reach Kafka.
	mustExec(ctx, t, env, "SELECT pg_logical_emit_message(false, 'outbox-relay', 'heartbeat')")
	target := env.CurrentLSN(ctx)
	if target-start < 10<<20 {
		t.Fatalf("the busy writes made only %d bytes of WAL; the test needs more to mean anything", target-start)
	}
	// A few status intervals (100 ms here) plus decoding time.
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	env.WaitConfirmed(wctx, cfg.Replication.Slot, target)
	if got := run.Metric("outbox_relay_events_received_total"); got != 0 {
		t.Fatalf("received %v events from a table outside the publication or a heartbeat", got)
	}
	if got := run.Metric("outbox_relay_replication_skipped_changes_total"); got < 1 {
		t.Fatalf("the heartbeat message was not seen and skipped (skipped changes: %v)", got)
	}
}

func TestHugeTransactionRespectsCap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 3})
	cfg := env.Config()
	const capacity, rows = 1000, 100000
	cfg.Relay.MaxInFlight = capacity
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)

	if _, err := env.Pool.Exec(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
		SELECT 'bulk', 'agg-' || (g % 50), 'Imported', jsonb_build_object('n', g) FROM generate_series(1, $1) g`, rows); err != nil {
		t.Fatal(err)
	}
	end := env.CurrentLSN(ctx)
	recs, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), relaytest.Topics("bulk"), rows)
	if err != nil {
		t.Fatal(err)
	}
	distinct := map[string]bool{}
	for _, r := range recs {
		distinct[string(r.Key)] = true
	}
	if len(distinct) != rows {
		t.Fatalf("%d distinct events delivered, want %d", len(distinct), rows)
	}
	env.WaitConfirmed(ctx, cfg.Replication.Slot, end)
	peak := run.Metric("outbox_relay_inflight_peak_events")
	if peak > capacity {
		t.Fatalf("in-flight peaked at %v, over the cap of %d", peak, capacity)
	}
	if peak < capacity {
		t.Fatalf("in-flight peaked at %v: the cap of %d was never reached, so backpressure was not exercised", peak, capacity)
	}
}

func TestLargePayloadsRespectByteCap(t *testing.T) {
	// Counting events alone let 10 KB payloads hold 10,000 x 10 KB in
	// memory (bench: 70 MB RSS); the byte cap bounds what they weigh.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 3})
	cfg := env.Config()
	const byteCap, rows = 256 << 10, 3000
	cfg.Relay.MaxInFlightBytes = byteCap
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)

	mustExec(ctx, t, env, fmt.Sprintf(`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
		SELECT 'large', 'agg-' || (g %% 20), 'Imported', jsonb_build_object('n', g, 'pad', repeat('x', 8000))
		FROM generate_series(1, %d) g`, rows))
	end := env.CurrentLSN(ctx)
	env.WaitConfirmed(ctx, cfg.Replication.Slot, end)
	if n, err := kafkatest.Count(ctx, env.Kafka.Addrs(), relaytest.Topics("large")); err != nil || n < rows {
		t.Fatalf("%d records in Kafka (err %v), want %d", n, err, rows)
	}
	peakBytes := run.Metric("outbox_relay_inflight_peak_bytes")
	peakEvents := run.Metric("outbox_relay_inflight_peak_events")
	if peakBytes > byteCap {
		t.Fatalf("in-flight bytes peaked at %v, over the cap of %d", peakBytes, byteCap)
	}
	if peakBytes < byteCap/2 || peakEvents >= float64(cfg.Relay.MaxInFlight) {
		t.Fatalf("peak %v bytes / %v events: the byte cap was not what held the reader back", peakBytes, peakEvents)
	}
	t.Logf("byte cap %d: peak %v bytes in %v events", byteCap, peakBytes, peakEvents)
}

func TestStartupErrorsNameTheFix(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cases := []struct {
		name    string
		prepare func(t *testing.T, env *relaytest.Env, cfg *relaytest.Config)
		want    []string
	}{
		{"missing table", func(t *testing.T, env *relaytest.Env, _ *relaytest.Config) {
			mustExec(ctx, t, env, "DROP TABLE outbox")
		}, []string{`"public"."outbox" does not exist`, "testdata/outbox.sql"}},
		{"missing configured column", func(_ *testing.T, _ *relaytest.Env, cfg *relaytest.Config) {
			cfg.Replication.Route.Columns.Payload = "body"
		}, []string{`no column "body"`, "--payload-column"}},
		{"slot with another plugin", func(t *testing.T, env *relaytest.Env, cfg *relaytest.Config) {
			mustExec(ctx, t, env, fmt.Sprintf("SELECT pg_create_logical_replication_slot('%s', 'test_decoding')", cfg.Replication.Slot))
		}, []string{`uses plugin "test_decoding", not pgoutput`, "pg_drop_replication_slot"}},
		{"publication without inserts", func(t *testing.T, env *relaytest.Env, _ *relaytest.Config) {
			mustExec(ctx, t, env, "CREATE PUBLICATION outbox_relay FOR TABLE outbox WITH (publish = 'delete')")
		}, []string{"does not publish inserts", "ALTER PUBLICATION"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := relaytest.NewEnv(t, pg, kafkatest.Options{})
			cfg := env.Config()
			tc.prepare(t, env, &cfg)
			expectFatal(ctx, t, cfg, tc.want...)
		})
	}

	t.Run("wal_level replica", func(t *testing.T) {
		replica := pgtestReplica(ctx, t)
		env := relaytest.NewEnv(t, replica, kafkatest.Options{})
		expectFatal(ctx, t, env.Config(), "wal_level is 'replica'", "wal_level=logical", "restart Postgres")
	})
}

func expectFatal(ctx context.Context, t *testing.T, cfg relaytest.Config, want ...string) {
	t.Helper()
	run := relaytest.Start(t, cfg)
	select {
	case <-run.Done():
		err := run.Err()
		if err == nil {
			t.Fatal("relay stopped without an error")
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
	case <-ctx.Done():
		st := run.Relay.State()
		t.Fatalf("relay did not stop: %s %s", st.Phase, st.Detail)
	}
}

func mustExec(ctx context.Context, t *testing.T, env *relaytest.Env, sql string) {
	t.Helper()
	if _, err := env.Pool.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestAddColumnMidStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{})
	run := relaytest.Start(t, env.Config())
	run.WaitReady(ctx, t)

	var want []relaytest.Inserted
	for i := 0; i < 3; i++ {
		ins, _ := env.Insert(ctx, []relaytest.Event{
			{AggregateType: "order", AggregateID: "x", EventType: "E", Seq: 2 * i},
			{AggregateType: "order", AggregateID: "x", EventType: "E", Seq: 2*i + 1},
		})
		want = append(want, ins...)
		// Columns added before and between the routed ones' positions
		// change what a positional decoder would read.
		mustExec(ctx, t, env, fmt.Sprintf("ALTER TABLE outbox ADD COLUMN extra%d text DEFAULT 'v%d'", i, i))
	}
	mustExec(ctx, t, env, "ALTER TABLE outbox DROP COLUMN created_at")
	ins, _ := env.Insert(ctx, []relaytest.Event{{AggregateType: "order", AggregateID: "x", EventType: "E", Seq: 6}})
	want = append(want, ins...)

	recs, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), relaytest.Topics("order"), len(want))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d", len(recs), len(want))
	}
	for i, w := range want {
		if string(recs[i].Key) != w.ID || string(recs[i].Value) != w.Payload {
			t.Fatalf("record %d = %s %s, want %s %s", i, recs[i].Key, recs[i].Value, w.ID, w.Payload)
		}
	}
}

func TestGracefulStopResendsAtMostOneTransaction(t *testing.T) {
	// Regression: an event tracked but not yet handed to the producer when
	// SIGTERM arrived kept the drain waiting for the whole shutdown timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 3})
	cfg := env.Config()
	cfg.Relay.ShutdownTimeout = 30 * time.Second
	first := relaytest.Start(t, cfg)
	first.WaitReady(ctx, t) // creates the slot
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}

	// A backlog of 500 transactions, so the relay is mid-stream when stopped.
	const txns, perTxn = 500, 100
	mustExec(ctx, t, env, fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP
		INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
		SELECT 'order', 'a' || (g %% 7), 'E', jsonb_build_object('i', i, 'g', g) FROM generate_series(1, %d) g;
		COMMIT; END LOOP; END $$`, txns, perTxn))
	end := env.CurrentLSN(ctx)
	topics := relaytest.Topics("order")

	run := relaytest.Start(t, cfg)
	waitCount(ctx, t, env, topics, 2000, "the stop")
	stopStart := time.Now()
	if err := run.Stop(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	took := time.Since(stopStart)
	if took > cfg.Relay.ShutdownTimeout/2 {
		t.Fatalf("graceful stop took %s: it waited for an ack that could not come", took)
	}
	confirmedAtStop := env.Confirmed(ctx, cfg.Replication.Slot)
	if confirmedAtStop >= end {
		t.Fatalf("the relay had read the whole backlog before the stop; the test did not stop it mid-stream")
	}

	relaytest.Start(t, cfg)
	env.WaitConfirmed(ctx, cfg.Replication.Slot, end)
	recs := readEverything(ctx, t, env, topics)
	seen := map[string]int{}
	for _, r := range recs {
		seen[string(r.Key)]++
	}
	rows, err := env.Pool.Query(ctx, "SELECT id::text, xmin::text FROM outbox")
	if err != nil {
		t.Fatal(err)
	}
	dupTxns := map[string]bool{}
	total := 0
	for rows.Next() {
		var id, xid string
		if err := rows.Scan(&id, &xid); err != nil {
			t.Fatal(err)
		}
		total++
		switch {
		case seen[id] == 0:
			t.Fatalf("event %s lost across a graceful restart", id)
		case seen[id] > 1:
			dupTxns[xid] = true
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if total != txns*perTxn {
		t.Fatalf("read %d outbox rows, want %d", total, txns*perTxn)
	}
	if len(dupTxns) > 1 {
		t.Fatalf("events of %d transactions were resent after a graceful stop; at most the one being read may be", len(dupTxns))
	}
	t.Logf("graceful stop mid-stream in %s; transactions partly resent: %d", took.Round(time.Millisecond), len(dupTxns))
}
