package inbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/inbox"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
)

// seedIDs inserts n ids for group applied age ago, named prefix-i.
func (e *env) seedIDs(ctx context.Context, group, prefix string, n int, age time.Duration) {
	e.t.Helper()
	_, err := e.pool.Exec(ctx, `INSERT INTO inbox (consumer_group, event_id, topic, kafka_partition, kafka_offset, applied_at)
		SELECT $1, $2 || '-' || i, 't', 0, i, now() - make_interval(secs => $3) FROM generate_series(0, $4 - 1) i`,
		group, prefix, age.Seconds(), n)
	if err != nil {
		e.t.Fatal(err)
	}
}

// remaining counts ids per group and prefix.
func (e *env) remaining(ctx context.Context) map[string]int {
	e.t.Helper()
	rows, err := e.pool.Query(ctx, `SELECT consumer_group || '/' || split_part(event_id, '-', 1), count(*) FROM inbox GROUP BY 1`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			e.t.Fatal(err)
		}
		out[k] = n
	}
	return out
}

// Retention deletes this group's ids older than the horizon, in batches,
// and nothing else: not younger ids, not another group's.
func TestPruneOnlyOlderThanRetention(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const day = 24 * time.Hour
	e := newEnv(t)
	e.seedIDs(ctx, "g1", "old", 10, 31*day)
	e.seedIDs(ctx, "g1", "young", 4, 29*day)
	e.seedIDs(ctx, "g1", "new", 3, 0)
	e.seedIDs(ctx, "g2", "old", 5, 31*day)

	cfg := e.config("g1", recordEffect, "orders")
	cfg.PruneBatch = 3 // 10 old ids: four statements
	c, err := inbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.Prune(ctx)
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	want := map[string]int{"g1/young": 4, "g1/new": 3, "g2/old": 5}
	if got := e.remaining(ctx); n != 10 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Prune deleted %d; left %v, want 10 deleted and %v left", n, got, want)
	}
}

// Run prunes on its schedule, by DefaultRetention unless told otherwise.
func TestRunPrunesOnSchedule(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	e := newEnv(t, "orders")
	e.seedIDs(ctx, "g1", "old", 5, inbox.DefaultRetention+time.Hour)
	e.seedIDs(ctx, "g1", "young", 2, inbox.DefaultRetention-time.Hour)

	cfg := e.config("g1", recordEffect, "orders")
	cfg.PruneInterval = 100 * time.Millisecond
	r := e.start(cfg)
	want := map[string]int{"g1/young": 2}
	var got map[string]int
	if !eventually.True(ctx, 50*time.Millisecond, func() bool {
		got = e.remaining(ctx)
		return fmt.Sprint(got) == fmt.Sprint(want)
	}) {
		t.Fatalf("inbox holds %v, want %v", got, want)
	}
	if m := r.metric("outbox_relay_inbox_pruned_ids_total"); m != 5 {
		t.Errorf("pruned_ids_total = %v, want 5", m)
	}
}
