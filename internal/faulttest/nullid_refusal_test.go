package faulttest_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/admin"
	"github.com/outbox-relay/outbox-relay/checkpoint"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/relay"
)

var advanceTo = regexp.MustCompile(`outbox-relay slot advance --to ([0-9A-F]+/[0-9A-F]+) --yes`)

// TestNullIDHaltAdvisesAWorkingMove pins advice that could not work: an
// outbox row with a NULL id halted the relay with "outbox-relay slot skip
// --event (no id)", but slot skip finds events by id. The advice must be a
// move that skips that row's transaction, and only what precedes it.
func TestNullIDHaltAdvisesAWorkingMove(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2})
	if _, err := env.Pool.Exec(ctx, `ALTER TABLE outbox DROP CONSTRAINT outbox_pkey, ALTER COLUMN id DROP NOT NULL`); err != nil {
		t.Fatal(err)
	}
	cfg := env.Config()
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)

	env.Insert(ctx, []relaytest.Event{{AggregateType: "order", AggregateID: "agg-1", EventType: "Created", Seq: 0}})
	err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload) VALUES
			(gen_random_uuid(), 'order', 'agg-1', 'Updated', '{"seq": 1}'),
			(NULL, 'order', 'agg-1', 'Broken', '{"seq": 2}'),
			(gen_random_uuid(), 'order', 'agg-1', 'Updated', '{"seq": 3}')`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	after, afterLSN := env.Insert(ctx, []relaytest.Event{{AggregateType: "order", AggregateID: "agg-1", EventType: "Shipped", Seq: 4}})

	select {
	case <-run.Done():
	case <-ctx.Done():
		t.Fatal("the relay did not stop at the row with a NULL id")
	}
	var ue *relay.UndeliverableError
	if err := run.Err(); !errors.As(err, &ue) || ue.EventID != "" {
		t.Fatalf("relay stopped with %v, want an *relay.UndeliverableError for the row with no id", err)
	}
	msg := run.Err().Error()
	t.Logf("halt message: %s", msg)
	if strings.Contains(msg, "slot skip") {
		t.Errorf("the advice names slot skip, which cannot find an event with no id: %s", msg)
	}
	m := advanceTo.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("the halt message advises no slot advance --to <lsn> --yes: %s", msg)
	}
	to, err := pglogrepl.ParseLSN(m[1])
	if err != nil {
		t.Fatal(err)
	}

	// What the advised move skips, as slot advance lists it: the broken
	// row's transaction, never the transaction after it.
	conn, err := pgx.Connect(ctx, env.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	waitSlotIdle(ctx, t, env)
	skipped, err := admin.PeekUpTo(ctx, conn, cfg.Replication, to)
	if err != nil {
		t.Fatal(err)
	}
	var noID bool
	for _, e := range skipped {
		noID = noID || e.ID == ""
		if e.ID == after[0].ID {
			t.Errorf("the advised move also skips %s, committed after the broken row's transaction", e.ID)
		}
	}
	if !noID {
		t.Errorf("the advised move to %s does not skip the row with no id; it skips %+v", to, skipped)
	}
	if _, err := admin.AdvanceSlot(ctx, conn, cfg.Replication.Slot, to, checkpoint.MovedByAdvance); err != nil {
		t.Fatalf("the advised move failed: %v", err)
	}

	// Restarted, the relay delivers what follows and moves past it.
	relaytest.Start(t, cfg)
	env.WaitConfirmed(ctx, cfg.Replication.Slot, afterLSN)
	total, err := kafkatest.Count(ctx, env.Kafka.Addrs(), relaytest.Topics("order"))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), relaytest.Topics("order"), int(total))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Headers["id"] == after[0].ID {
			return
		}
	}
	t.Errorf("the event after the skipped transaction is not in Kafka (%d records)", len(recs))
}

// waitSlotIdle polls until no walsender holds the env's slot.
func waitSlotIdle(ctx context.Context, t *testing.T, env *relaytest.Env) {
	t.Helper()
	if !eventually.True(ctx, 20*time.Millisecond, func() bool {
		var active bool
		err := env.Pool.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", env.Slot).Scan(&active)
		return err == nil && !active
	}) {
		t.Fatalf("slot %s stayed active: %v", env.Slot, ctx.Err())
	}
}
