// Package zonetest checks that prune and replay compare a created-at column
// of type timestamp (without time zone) as the database session wrote it,
// whatever the relay process's own time zone: a review found prune deleting
// rows younger than --older-than, and replay missing the rows of a gap
// window, when the two zones differed.
package zonetest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/admin"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
	"github.com/outbox-relay/outbox-relay/replay"
	"github.com/outbox-relay/outbox-relay/replication"
)

var pg *pgtest.Server

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &pg)) }

// otherZone is a time zone whose offset now differs from this process's.
func otherZone(t *testing.T) string {
	_, local := time.Now().Zone()
	for _, z := range []string{"America/New_York", "Asia/Tokyo"} {
		loc, err := time.LoadLocation(z)
		if err != nil {
			t.Fatal(err)
		}
		if _, off := time.Now().In(loc).Zone(); off != local {
			return z
		}
	}
	t.Fatal("no zone differs from the process's")
	return ""
}

// database returns a connection to a fresh database whose sessions run in
// zone, with a default-shaped outbox whose created_at is a timestamp.
func database(ctx context.Context, t *testing.T, name, zone string) *pgx.Conn {
	t.Helper()
	url, err := pg.CreateDatabase(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"ALTER DATABASE " + name + " SET TimeZone = '" + zone + "'",
	} {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close(ctx)
	if conn, err = pgx.Connect(ctx, url); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, `CREATE TABLE public.outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregate_type text NOT NULL,
		aggregate_id text NOT NULL, event_type text NOT NULL, payload jsonb NOT NULL, headers jsonb,
		created_at timestamp NOT NULL DEFAULT now()); CREATE INDEX ON public.outbox (created_at)`); err != nil {
		t.Fatal(err)
	}
	return conn
}

func TestPruneKeepsRowsYoungerThanTheHorizon(t *testing.T) {
	ctx := context.Background()
	zone := otherZone(t)
	conn := database(ctx, t, "prunezone", zone)
	if _, err := conn.Exec(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at) VALUES
		('order', '1', 'Created', '{}', now() - interval '3 hours'), ('order', '1', 'Created', '{}', now() - interval '1 minute'),
		('order', '1', 'Created', '{}', now())`); err != nil {
		t.Fatal(err)
	}
	cfg := admin.PruneConfig{Table: replication.TableName{Schema: "public", Table: "outbox"}, Column: "created_at", OlderThan: 2 * time.Hour, Batch: 100}
	plan, err := admin.PlanPrune(ctx, conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Candidates != 1 {
		t.Errorf("database in %s, relay in %s: %d rows older than 2h counted, want 1", zone, time.Local, plan.Candidates)
	}
	if _, err := admin.Prune(ctx, conn, cfg, plan.Horizon, nil); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 2 {
		t.Errorf("database in %s, relay in %s: --older-than 2h left %d rows, want 2 (1 minute old and new)", zone, time.Local, left)
	}
}

func TestReplayWindowIsInstants(t *testing.T) {
	ctx := context.Background()
	zone := otherZone(t)
	conn := database(ctx, t, "replayzone", zone)
	if _, err := conn.Exec(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) VALUES ('order', '1', 'Created', '{}')`); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	f := replay.Filter{CreatedAt: "created_at", Since: now.Add(-5 * time.Minute).Truncate(time.Second), Until: now.Add(time.Minute).Truncate(time.Second)}
	s, err := replay.Plan(ctx, conn, replication.DefaultConfig(), f)
	if err != nil {
		t.Fatal(err)
	}
	if s.Rows != 1 {
		t.Errorf("database in %s: the row inserted a moment ago is not in the UTC window %s..%s (%d rows)", zone, f.Since, f.Until, s.Rows)
	}
}
