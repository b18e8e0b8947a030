package debeziumtest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/relay"
)

// emit is the SQL of a transactional outbox message for aggregate 42.
func emit(prefix, id string, seq int) string {
	return fmt.Sprintf(`SELECT pg_logical_emit_message(true, '%s',
		'{"id": "%s", "aggregate_type": "order", "aggregate_id": "42", "event_type": "OrderPaid", "payload": {"seq": %d}, "headers": {"traceparent": "tp-%d"}}')`,
		prefix, id, seq, seq)
}

// --message-prefix with no outbox table: transactional messages with the
// prefix become events in commit order; rolled-back ones never, nor
// non-transactional ones or other prefixes; content that is not the
// documented JSON halts the relay, naming it.
func TestMessagePrefixTableLess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnvWith(t, pg, kafkatest.Options{Partitions: 3}, "SELECT 1")
	var tables int
	if err := env.Pool.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&tables); err != nil || tables != 0 {
		t.Fatalf("%d tables in public (%v), want none", tables, err)
	}
	cfg := env.Config()
	cfg.Replication.Table, cfg.Replication.MessagePrefix = "", "outbox"
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)

	mustExec := func(q pgx.Tx, sql string) {
		t.Helper()
		if _, err := q.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	begin := func() pgx.Tx {
		t.Helper()
		tx, err := env.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return tx
	}
	// a opens first and commits last: its messages follow b's.
	a, b := begin(), begin()
	mustExec(a, emit("outbox", "m-a1", 1))
	mustExec(b, emit("outbox", "m-b1", 2))
	mustExec(b, `SELECT pg_logical_emit_message(true, 'other-app', '{"id": "x"}')`)
	mustExec(b, `SELECT pg_logical_emit_message(false, 'outbox', '{"id": "not-transactional"}')`)
	mustExec(b, `SELECT pg_logical_emit_message(false, 'outbox-relay', '')`)
	if err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	rolled := begin()
	mustExec(rolled, emit("outbox", "m-rolled-back", 99))
	if err := rolled.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(a, emit("outbox", "m-a2", 3))
	if err := a.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	c := begin()
	mustExec(c, emit("outbox", "m-c1", 4))
	if err := c.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	want := []string{"m-b1", "m-a1", "m-a2", "m-c1"}
	recs, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), []string{"outbox.event.order"}, len(want))
	if err != nil {
		t.Fatal(err)
	}
	keyed := byKey(t, recs)
	if got := ids(recs); len(recs) != len(want) || len(keyed) != len(want) {
		t.Fatalf("records %v (keys %d), want %v, one key each", got, len(keyed), want)
	}
	// Keyed by id, partitioned by aggregate: one partition, commit order.
	slices.SortFunc(recs, func(x, y kafkatest.Record) int { return int(x.Offset - y.Offset) })
	if got := ids(recs); !slices.Equal(got, want) {
		t.Errorf("ids in offset order %v, want commit order %v", got, want)
	}
	for _, r := range recs {
		if !strings.HasPrefix(string(r.Value), `{"seq": `) || r.Headers["event_type"] != "OrderPaid" || !strings.HasPrefix(r.Headers["traceparent"], "tp-") {
			t.Errorf("record %s: value %q headers %v", r.Headers["id"], r.Value, r.Headers)
		}
	}
	if n := run.Metric("outbox_relay_replication_skipped_changes_total"); n < 3 {
		t.Errorf("skipped changes %v, want the other prefix, the non-transactional message and the heartbeat counted", n)
	}

	if _, err := env.Pool.Exec(ctx, `SELECT pg_logical_emit_message(true, 'outbox', '{"id": "m-bad", "aggregate": "42"}')`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-run.Done():
	case <-ctx.Done():
		t.Fatal("the relay did not stop at a message that is not the documented JSON")
	}
	var ue *relay.UndeliverableError
	if err := run.Err(); !errors.As(err, &ue) || !strings.Contains(err.Error(), "not the documented JSON") {
		t.Fatalf("relay stopped with %v, want an UndeliverableError saying the content is not the documented JSON", err)
	}
}

// An outbox table and --message-prefix together: rows and messages of one
// transaction arrive in commit order across both.
func TestMessagesMixedWithRows(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 3})
	cfg := env.Config()
	cfg.Replication.MessagePrefix = "outbox"
	cfg.Replication.Route.KeyColumn = "aggregate_id"
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)

	row := func(seq int) string {
		return fmt.Sprintf(`INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload)
			VALUES ('00000000-0000-0000-0000-00000000000%d', 'order', '42', 'Row', '{"seq": %d}')`, seq, seq)
	}
	err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
		for _, q := range []string{row(1), emit("outbox", "m-2", 2), row(3), emit("outbox", "m-4", 4)} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, emit("outbox", "m-5", 5))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"00000000-0000-0000-0000-000000000001", "m-2", "00000000-0000-0000-0000-000000000003", "m-4", "m-5"}
	recs, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), []string{"outbox.event.order"}, len(want))
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(byKey(t, recs)["42"]); !slices.Equal(got, want) {
		t.Errorf("ids in offset order %v, want commit order %v", got, want)
	}
}

// With --on-undeliverable dead-letter, a message whose content is not the
// documented JSON goes to the dead-letter topic with its content, and the
// messages after it are delivered.
func TestMessageContentDeadLettered(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnvWith(t, pg, kafkatest.Options{Partitions: 1}, "SELECT 1")
	cfg := env.Config()
	cfg.Replication.Table, cfg.Replication.MessagePrefix = "", "outbox"
	cfg.Relay.OnUndeliverable = relay.DeadLetter
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)

	bad := `{"id": "m-bad", "aggregate_id": 42}`
	for _, q := range []string{`SELECT pg_logical_emit_message(true, 'outbox', '` + bad + `')`, emit("outbox", "m-good", 1)} {
		if _, err := env.Pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), []string{cfg.Relay.DeadLetterTopic, "outbox.event.order"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		switch r.Topic {
		case cfg.Relay.DeadLetterTopic:
			if string(r.Value) != bad {
				t.Errorf("dead letter value %q, want the message's content %q", r.Value, bad)
			}
		case "outbox.event.order":
			if r.Headers["id"] != "m-good" {
				t.Errorf("delivered %v, want m-good", r.Headers)
			}
		}
	}
	if len(recs) != 2 || recs[0].Topic == recs[1].Topic {
		t.Errorf("records %+v, want one dead letter and one event", recs)
	}
}
