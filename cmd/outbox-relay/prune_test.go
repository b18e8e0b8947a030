package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/admin"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

// insertAged writes n outbox rows created age ago (a Postgres interval)
// and returns their ids.
func (f *fixture) insertAged(ctx context.Context, t *testing.T, age string, n int) []string {
	t.Helper()
	rows, err := f.Pool.Query(ctx, `
		INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at)
		SELECT 'order', 'aged-' || g, 'Aged', jsonb_build_object('seq', g), now() - $1::interval
		FROM generate_series(1, $2) g RETURNING id::text`, age, n)
	if err != nil {
		t.Fatalf("insert aged rows: %v", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

func (f *fixture) outboxIDs(ctx context.Context, t *testing.T) []string {
	t.Helper()
	rows, err := f.Pool.Query(ctx, "SELECT id::text FROM outbox ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func (f *fixture) outboxCount(ctx context.Context, t *testing.T) int {
	t.Helper()
	var n int
	if err := f.Pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Prune deletes exactly the rows older than the horizon, in batches with
// pauses, only with --yes and an index, while the relay keeps delivering.
func TestPruneDeletesOldRowsInBatches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := newFixture(t)
	d := f.start(ctx, t)
	d.waitReady(ctx, t)

	old := f.insertAged(ctx, t, "12 days", 10)
	recent := f.insertAged(ctx, t, "6 days", 3)
	fresh, _ := f.insert(ctx, "order", "order")
	keep := append(append([]string{}, recent...), ids(fresh)...)
	total := len(old) + len(keep)

	// No index on created_at (testdata/outbox.sql has none): refused, with
	// the statement to run; --allow-seqscan lets a dry run through.
	_, err := f.cli(ctx, "prune", "--older-than", "7d", "--yes")
	var noIndex *admin.NoIndexError
	if !errors.As(err, &noIndex) || !strings.Contains(err.Error(), "CREATE INDEX CONCURRENTLY") {
		t.Fatalf("prune without an index: %v, want a refusal naming CREATE INDEX CONCURRENTLY", err)
	}
	if n := f.outboxCount(ctx, t); n != total {
		t.Fatalf("refused prune left %d rows, want %d", n, total)
	}
	out, err := f.cli(ctx, "prune", "--older-than", "7d", "--dry-run", "--allow-seqscan", "--output", "json")
	if r := decodePrune(t, out, err); r.Candidates != int64(len(old)) || r.Deleted != 0 || r.Applied {
		t.Fatalf("dry run with --allow-seqscan: %+v, want %d candidates and nothing deleted", r, len(old))
	}
	// The printed statement is the one to run.
	if _, err := f.Pool.Exec(ctx, admin.PruneIndexSQL(noIndex.Table, noIndex.Column, false)); err != nil {
		t.Fatalf("the printed CREATE INDEX fails: %v", err)
	}

	out, err = f.cli(ctx, "prune", "--older-than", "168h", "--dry-run", "--output", "json")
	if r := decodePrune(t, out, err); r.Candidates != int64(len(old)) || r.Deleted != 0 {
		t.Fatalf("dry run: %+v, want %d candidates", r, len(old))
	}
	if _, err := f.cli(ctx, "prune", "--older-than", "7d"); !errors.Is(err, errNeedYes) {
		t.Fatalf("prune without --yes: %v, want it refused", err)
	}
	if n := f.outboxCount(ctx, t); n != total {
		t.Fatalf("dry run and prune without --yes left %d rows, want %d", n, total)
	}

	// Watch the table from outside while prune runs, and write events.
	var between atomic.Int64
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for watchCtx.Err() == nil {
			var n int
			if f.Pool.QueryRow(watchCtx, "SELECT count(*) FROM outbox WHERE created_at < now() - interval '7 days'").Scan(&n) == nil && n > 0 && n < len(old) {
				between.Add(1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	done := make(chan struct{})
	var pruneOut string
	var pruneErr error
	go func() {
		defer close(done)
		pruneOut, pruneErr = f.cli(ctx, "prune", "--older-than", "7d", "--batch", "3", "--pause", "300ms", "--yes", "--output", "json")
	}()
	var during []relaytest.Inserted
	for {
		evs, _ := f.insert(ctx, "order")
		during = append(during, evs...)
		select {
		case <-done:
		case <-time.After(100 * time.Millisecond):
			continue
		}
		break
	}
	stopWatch()
	<-watched

	r := decodePrune(t, pruneOut, pruneErr)
	if !r.Applied || r.Deleted != int64(len(old)) || r.Candidates != int64(len(old)) {
		t.Fatalf("prune reported %+v, want %d deleted", r, len(old))
	}
	if !slices.Equal(r.Batches, []int64{3, 3, 3, 1}) {
		t.Fatalf("batches %v, want [3 3 3 1]", r.Batches)
	}
	if between.Load() == 0 {
		t.Fatal("no reader ever saw the table part-way pruned: the rows went in one DELETE")
	}
	want := append(keep, ids(during)...)
	slices.Sort(want)
	if got := f.outboxIDs(ctx, t); !slices.Equal(got, want) {
		t.Fatalf("rows left %v, want the newer ones %v", got, want)
	}

	// The relay delivered what was written while prune ran.
	lsn := f.CurrentLSN(ctx)
	f.WaitConfirmed(ctx, f.slot, lsn)
	recs, err := kafkatest.ReadAll(ctx, f.Kafka.Addrs(), relaytest.Topics("order"), total+len(during))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, rec := range recs {
		got[string(rec.Key)] = true
	}
	for _, e := range during {
		if !got[e.ID] {
			t.Errorf("event %s written while prune ran never reached Kafka", e.ID)
		}
	}
	f.stopRelay(ctx, t, d)
}

func decodePrune(t *testing.T, out string, err error) pruneReport {
	t.Helper()
	if err != nil {
		t.Fatalf("prune: %v\n%s", err, out)
	}
	var r pruneReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("prune --output json: %v\n%s", err, out)
	}
	return r
}

func TestParseAge(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"168h", 168 * time.Hour, false},
		{"7d", 7 * 24 * time.Hour, false},
		{"1d12h", 36 * time.Hour, false},
		{"90m", 90 * time.Minute, false},
		{"d", 0, true},
		{"7days", 0, true},
		{"-1d", 0, true},
		{"x", 0, true},
	} {
		got, err := parseAge(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseAge(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// On a partitioned outbox a row's ctid is unique only within its partition:
// a batch's ctid list also matches rows of other partitions, which must
// never be newer ones. The printed index statement works on the parent.
func TestPruneAndReplayPartitionedOutbox(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := &fixture{Env: relaytest.NewEnvWith(t, pg, kafkatest.Options{}, partitionedOutboxSQL),
		slot: fmt.Sprintf("ops_%d_%d", os.Getpid(), slotSeq.Add(1))}
	insert := func(typ, age string, n int) {
		if _, err := f.Pool.Exec(ctx, `
			INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at)
			SELECT $1, 'p-' || g, 'Aged', jsonb_build_object('seq', g), now() - $2::interval FROM generate_series(1, $3) g`,
			typ, age, n); err != nil {
			t.Fatal(err)
		}
	}
	// Both partitions fill from their first page, so their ctids coincide:
	// old order rows share theirs with old and with young payment rows.
	insert("order", "10 days", 7)
	insert("payment", "10 days", 3)
	insert("payment", "1 hour", 4)

	_, err := f.cli(ctx, "prune", "--older-than", "7d", "--yes")
	var noIndex *admin.NoIndexError
	if !errors.As(err, &noIndex) || !noIndex.Partitioned {
		t.Fatalf("prune without an index: %v, want a refusal for a partitioned table", err)
	}
	if _, err := f.Pool.Exec(ctx, admin.PruneIndexSQL(noIndex.Table, noIndex.Column, true)); err != nil {
		t.Fatalf("the printed CREATE INDEX fails: %v", err)
	}
	out, err := f.cli(ctx, "prune", "--older-than", "7d", "--batch", "2", "--pause", "0s", "--yes", "--output", "json")
	if r := decodePrune(t, out, err); r.Deleted != 10 || !r.Applied {
		t.Fatalf("prune: %+v, want 10 deleted", r)
	}
	var left, young int
	if err := f.Pool.QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE created_at > now() - interval '1 day') FROM outbox").Scan(&left, &young); err != nil {
		t.Fatal(err)
	}
	if left != 4 || young != 4 {
		t.Fatalf("%d rows left (%d young), want the 4 young ones", left, young)
	}

	since := time.Now().Add(-2 * time.Hour).UTC().Format(time.RFC3339)
	out, err = f.cli(ctx, "replay", "--since", since, "--kafka-brokers", strings.Join(f.Kafka.Addrs(), ","), "--dry-run", "--output", "json")
	if r := decodeReplay(t, out, err); r.Rows != 4 || r.Topics["outbox.event.payment"] != 4 {
		t.Fatalf("replay dry run on the partitioned outbox: %+v, want 4 rows to outbox.event.payment", r)
	}
}
