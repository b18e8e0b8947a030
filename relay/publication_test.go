package relay_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/admin"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

// partitionedOutbox is the default outbox split in two by created_at.
const partitionedOutbox = `
CREATE TABLE outbox (
    id uuid NOT NULL DEFAULT gen_random_uuid(), aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    event_type text NOT NULL, payload jsonb NOT NULL, headers jsonb, created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE outbox_a PARTITION OF outbox FOR VALUES FROM ('2000-01-01') TO ('2100-01-01');
CREATE TABLE outbox_b PARTITION OF outbox FOR VALUES FROM ('2100-01-01') TO ('2200-01-01');
`

// insertRow and insertRowB write one row (into outbox_a or outbox_b of a
// partitioned outbox) whose aggregate id is %s.
const (
	insertRow  = `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) VALUES ('order', '%s', 'Created', '{}')`
	insertRowB = `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at) VALUES ('order', '%s', 'Created', '{}', '2150-01-01')`
)

// execEach runs each statement in its own transaction, as separate WAL
// records: a change and its undo must not share a commit.
func execEach(ctx context.Context, t *testing.T, env *relaytest.Env, stmts ...string) {
	t.Helper()
	for _, s := range stmts {
		if _, err := env.Pool.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// waitHalt waits for the relay to stop and checks it stopped with a
// ConfigError containing one of want, not ready and saying why.
func waitHalt(ctx context.Context, t *testing.T, run *relaytest.Running, want ...string) error {
	t.Helper()
	select {
	case <-run.Done():
	case <-ctx.Done():
		st := run.Relay.State()
		t.Fatalf("relay still %s (%s); want it stopped saying one of %q", st.Phase, st.Detail, want)
	}
	err := run.Err()
	var ce *outboxrelay.ConfigError
	matched := false
	for _, w := range want {
		matched = matched || err != nil && strings.Contains(err.Error(), w)
	}
	if !errors.As(err, &ce) || !matched {
		t.Fatalf("Run = %v; want a ConfigError saying one of %q", err, want)
	}
	if st := run.Relay.State(); st.Ready() || st.Detail != err.Error() {
		t.Errorf("state = %s %q, want not ready and saying why", st.Phase, st.Detail)
	}
	return err
}

// Regression: the relay checked publication membership only at start.
// After the outbox left the publication, pgoutput stopped sending its rows
// (it decides at decode time), the slot confirmed past them on keepalives,
// /readyz kept answering "streaming" and nothing was logged: every later
// event was lost. Now the relay re-reads the publication before each
// confirmation and halts, naming the fix and the window to re-publish.
// Changes undone before the next check (a table dropped and added back,
// inserts switched off and on) are caught by what they leave behind in
// the catalog.
func TestOutboxLeavingThePublicationHaltsTheRelay(t *testing.T) {
	lost := []string{"no longer publishes the outbox table", "no longer exists"}
	for _, tc := range []struct {
		name   string
		schema string // "" = the default table, publication made by the relay
		change []string
		want   []string
	}{
		{name: "dropped from the publication", change: []string{`ALTER PUBLICATION outbox_relay DROP TABLE outbox`}, want: lost},
		{name: "dropped from the publication and added back", change: []string{`ALTER PUBLICATION outbox_relay DROP TABLE outbox`,
			fmt.Sprintf(insertRow, "lost"), `ALTER PUBLICATION outbox_relay ADD TABLE outbox`},
			want: append([]string{"removed from publication"}, lost...)},
		{name: "dropped and recreated", change: []string{`ALTER TABLE outbox RENAME TO outbox_old`,
			`CREATE TABLE outbox (LIKE outbox_old INCLUDING ALL)`}, want: append([]string{"renamed to"}, lost...)},
		{name: "dropped, recreated and published again", change: []string{`DROP TABLE outbox`, `CREATE TABLE outbox (
			id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregate_type text NOT NULL, aggregate_id text NOT NULL,
			event_type text NOT NULL, payload jsonb NOT NULL, headers jsonb, created_at timestamptz NOT NULL DEFAULT now())`,
			`ALTER PUBLICATION outbox_relay ADD TABLE outbox`}, want: append([]string{"dropped and created again"}, lost...)},
		{name: "inserts switched off and on", change: []string{`ALTER PUBLICATION outbox_relay SET (publish = 'update')`,
			fmt.Sprintf(insertRow, "lost"), `ALTER PUBLICATION outbox_relay SET (publish = 'insert')`},
			want: []string{"was altered", "no longer publishes inserts"}},
		{name: "publication dropped", change: []string{`DROP PUBLICATION outbox_relay`},
			want: []string{"publication \"outbox_relay\" no longer exists", "publication \"outbox_relay\" does not exist"}},
		{name: "schema publication dropped and added back",
			schema: relaytest.OutboxSQL(t) + `; CREATE PUBLICATION outbox_relay FOR TABLES IN SCHEMA public WITH (publish = 'insert')`,
			change: []string{`ALTER PUBLICATION outbox_relay DROP TABLES IN SCHEMA public`, fmt.Sprintf(insertRow, "lost"),
				`ALTER PUBLICATION outbox_relay ADD TABLES IN SCHEMA public`},
			want: append([]string{"removed from publication"}, lost...)},
		{name: "partition dropped from a publication of partitions",
			schema: partitionedOutbox + `CREATE PUBLICATION outbox_relay FOR TABLE outbox_a, outbox_b WITH (publish = 'insert');`,
			change: []string{`ALTER PUBLICATION outbox_relay DROP TABLE outbox_b`, fmt.Sprintf(insertRowB, "lost")},
			want:   lost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			schema := tc.schema
			if schema == "" {
				schema = relaytest.OutboxSQL(t)
			}
			env := relaytest.NewEnvWith(t, pg, kafkatest.Options{}, schema)
			cfg := env.Config()
			run := relaytest.Start(t, cfg)
			run.WaitReady(ctx, t)

			_, lsn := env.Insert(ctx, []relaytest.Event{{AggregateType: "order", AggregateID: "a", EventType: "Created", Seq: 1}})
			env.WaitConfirmed(ctx, cfg.Replication.Slot, lsn)

			execEach(ctx, t, env, tc.change[0])
			lostAt := env.CurrentLSN(ctx)
			execEach(ctx, t, env, tc.change[1:]...)
			// WAL that keepalives would otherwise let the slot confirm.
			for i := 0; i < 20; i++ {
				execEach(ctx, t, env, `SELECT pg_logical_emit_message(false, 'test', 'wal')`)
			}
			err := waitHalt(ctx, t, run, tc.want...)
			if !strings.Contains(err.Error(), "renamed to") && (!strings.Contains(err.Error(), "ALTER PUBLICATION") || !strings.Contains(err.Error(), "re-publish")) {
				t.Errorf("Run = %v; want the ALTER PUBLICATION to run and the window to re-publish", err)
			}
			if got := env.Confirmed(ctx, cfg.Replication.Slot); got > lostAt {
				t.Errorf("slot confirmed %s, past %s where the outbox left the publication", got, lostAt)
			}
		})
	}
}

// Regression: renaming the outbox halted the relay with "no longer exists"
// and advised ALTER PUBLICATION ADD TABLE, which fails: the renamed table is
// still published, nothing needs re-publishing, only --table is stale.
func TestOutboxRenamedSaysSo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{})
	run := relaytest.Start(t, env.Config())
	run.WaitReady(ctx, t)
	execEach(ctx, t, env, fmt.Sprintf(insertRow, "x"), `ALTER TABLE outbox RENAME TO outbox_renamed`)
	err := waitHalt(ctx, t, run, `renamed to "public"."outbox_renamed"`)
	if !strings.Contains(err.Error(), "--table") || strings.Contains(err.Error(), "re-publish the rows") {
		t.Errorf("Run = %v; want it to point at --table and not ask for a re-publish", err)
	}
}

// Regression: the watch's first reading was taken anew by every session,
// so the outbox leaving the publication and coming back while a session
// ended (a Kafka outage checks nothing until the session fails) went
// unnoticed, and its rows were lost.
func TestPublicationChangeAcrossAReconnectHalts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{})
	cfg := env.Config()
	cfg.Replication.StatusInterval = 10 * time.Second // no check before the reconnect
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	execEach(ctx, t, env,
		`ALTER PUBLICATION outbox_relay DROP TABLE outbox`,
		fmt.Sprintf(insertRow, "lost"),
		`ALTER PUBLICATION outbox_relay ADD TABLE outbox`,
		fmt.Sprintf(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '%s'`, cfg.Replication.Slot))
	waitHalt(ctx, t, run, "removed from publication")
}

// Regression: preflight accepted a publication that listed one partition
// of a partitioned outbox (any of its relations would do), so every row of
// the other partitions was never decoded.
func TestPublicationMustCoverEveryPartition(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnvWith(t, pg, kafkatest.Options{}, partitionedOutbox+
		`CREATE PUBLICATION outbox_relay FOR TABLE outbox_a WITH (publish = 'insert');`)
	run := relaytest.Start(t, env.Config())
	err := waitHalt(ctx, t, run, "neither the table nor every one of its partitions")
	if !strings.Contains(err.Error(), `ALTER PUBLICATION "outbox_relay" ADD TABLE "public"."outbox"`) {
		t.Errorf("Run = %v; want the ALTER PUBLICATION that adds the outbox", err)
	}
}

// Regression: with a publication of a partitioned outbox without
// publish_via_partition_root, rows written into a partition that was then
// detached before the relay read them (a deploy during partition rotation)
// arrive under a relation that is no partition now: they were skipped as
// another table's, and slot peek did not list them. Now peek lists them and
// the relay halts, saying what happened and how to go on.
func TestPartitionDetachedBeforeItWasReadHalts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnvWith(t, pg, kafkatest.Options{}, partitionedOutbox+
		`CREATE PUBLICATION outbox_relay FOR TABLE outbox WITH (publish = 'insert');`)
	cfg := env.Config()
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	if err := run.Stop(); err != nil {
		t.Fatal(err)
	}
	execEach(ctx, t, env, fmt.Sprintf(insertRowB, "in_b"), `ALTER TABLE outbox DETACH PARTITION outbox_b`)
	execEach(ctx, t, env, `SELECT pg_switch_wal()`) // flush for peek: pgtest runs synchronous_commit=off
	conn, err := pgx.Connect(ctx, env.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	evs, err := admin.Peek(ctx, conn, cfg.Replication, 0)
	if err != nil || len(evs) != 1 {
		t.Errorf("slot peek = %+v, %v; want the row written into outbox_b", evs, err)
	}
	run = relaytest.Start(t, cfg)
	waitHalt(ctx, t, run, "probably detached")
}

// Regression: a publication dropped while the relay was down was created
// again at start (--create-missing), and the walsender then failed every
// session with "publication does not exist" for the WAL older than it: the
// relay reconnected forever. Now it refuses to create a publication for an
// existing slot, and a mid-stream "publication does not exist" halts.
func TestPublicationDroppedWhileDownIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{})
	cfg := env.Config()
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	if err := run.Stop(); err != nil {
		t.Fatal(err)
	}
	execEach(ctx, t, env, `DROP PUBLICATION outbox_relay`, fmt.Sprintf(insertRow, "lost"))
	run = relaytest.Start(t, cfg)
	waitHalt(ctx, t, run, "does not exist, but slot")
	if n := run.Metric("outbox_relay_reconnects_total"); n > 0 {
		t.Errorf("%v reconnects; want a halt at the first attempt", n)
	}
}

// Regression (found by review): a publication change that the final status
// update's check finds was dropped: the Record hook refuses the position (good), but the
// session's error is dropped because ctx had ended (relay.Run returns nil
// on ctx end, and logs nothing), and the next process's first reading has
// nothing to compare with. The rows inserted while the outbox was out of
// the publication are then confirmed past, with no trace in the logs.
func TestPublicationChangeFoundAtShutdownIsNotForgotten(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{})
	cfg := env.Config()
	cfg.Replication.StatusInterval = 30 * time.Second // only the final status update checks
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	env.Insert(ctx, mutOrders(0, 1))
	waitCount(ctx, t, env, relaytest.Topics("order"), 1, "the change")
	execEach(ctx, t, env, `ALTER PUBLICATION outbox_relay DROP TABLE outbox`)
	lostAt := env.CurrentLSN(ctx)
	execEach(ctx, t, env, fmt.Sprintf(insertRow, "lost"), `ALTER PUBLICATION outbox_relay ADD TABLE outbox`)
	stopErr := run.Stop()
	for range 20 {
		execEach(ctx, t, env, `SELECT pg_logical_emit_message(false, 'test', 'wal')`)
	}
	past := env.CurrentLSN(ctx)

	cfg.Replication.StatusInterval = 100 * time.Millisecond
	run = relaytest.Start(t, cfg)
	if !eventually.True(ctx, 20*time.Millisecond, func() bool {
		select {
		case <-run.Done():
			return true
		default:
		}
		return env.Confirmed(ctx, env.Slot) >= past
	}) {
		t.Fatal("relay neither halted nor confirmed")
	}
	select {
	case <-run.Done():
	default:
		t.Fatalf("the first process stopped with %v; the second confirmed %s, past %s where the outbox left the publication: "+
			"the row inserted meanwhile is in Kafka: %v",
			stopErr, env.Confirmed(ctx, env.Slot), lostAt, delivered(ctx, t, env, "lost"))
	}
	if stopErr == nil || !strings.Contains(stopErr.Error(), "may never have been decoded") {
		t.Errorf("the first process stopped with %v, want the change it found at its final status update", stopErr)
	}
	waitHalt(ctx, t, run, "--accept-gap")
	if got := env.Confirmed(ctx, env.Slot); got >= past {
		t.Fatalf("the refusing start confirmed %s, past %s", got, past)
	}

	// Once the operator has re-published, --accept-gap goes on, once.
	cfg.AcceptGap = true
	run = relaytest.Start(t, cfg)
	if !eventually.True(ctx, 20*time.Millisecond, func() bool { return env.Confirmed(ctx, env.Slot) >= past }) {
		t.Fatalf("with --accept-gap the relay never confirmed past %s (relay %s %q)", past, run.Relay.State().Phase, run.Relay.State().Detail)
	}
}

// delivered reports whether the outbox row whose aggregate id is aggID
// reached Kafka.
func delivered(ctx context.Context, t *testing.T, env *relaytest.Env, aggID string) bool {
	t.Helper()
	var id string
	if err := env.Pool.QueryRow(ctx, "SELECT id::text FROM outbox WHERE aggregate_id = $1", aggID).Scan(&id); err != nil {
		t.Fatal(err)
	}
	for _, r := range readEverything(ctx, t, env, relaytest.Topics("order")) {
		if string(r.Key) == id {
			return true
		}
	}
	return false
}
