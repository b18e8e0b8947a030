package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/checkpoint"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

// A gap report prints the replay command that re-publishes the gap; run as
// printed (in the relay's environment), it sends the lost events.
func TestGapReportPrintsTheReplayThatHealsIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t)
	f.pgURLInEnv = true // as in a deployment: the password stays out of argv

	d := f.start(ctx, t)
	d.waitReady(ctx, t)
	first, lsn := f.insert(ctx, "order")
	f.WaitConfirmed(ctx, f.slot, lsn)
	f.stopRelay(ctx, t, d)

	// Behind the relay's back: events are written, the slot is dropped and
	// recreated past them.
	lost := f.insertRounds(ctx, []string{"g-1", "g-2"}, 0, 3)
	if _, err := f.Pool.Exec(ctx, "SELECT pg_drop_replication_slot($1)", f.slot); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", f.slot); err != nil {
		t.Fatal(err)
	}

	d = f.start(ctx, t)
	err := d.waitExit(ctx, t)
	var gap *checkpoint.GapError
	if !errors.As(err, &gap) {
		t.Fatalf("run returned %v, want a gap report", err)
	}
	_, command, ok := strings.Cut(err.Error(), "re-publish the gap's events with:\n  ")
	if !ok || !strings.HasPrefix(command, "outbox-relay replay --since ") {
		t.Fatalf("gap report prints no replay command:\n%s", err)
	}
	args := strings.Fields(command)[1:]
	var out, errOut bytes.Buffer
	if err := run(ctx, args, f.env, &out, &errOut); err != nil {
		t.Fatalf("the printed command %q: %v\n%s%s", command, err, out.String(), errOut.String())
	}

	// The relay's one delivery of the first event, and the replay of the
	// window: the lost events and the first one (the window opens
	// checkpoint.ReplayMargin before the record was written).
	recs, err := kafkatest.ReadAll(ctx, f.Kafka.Addrs(), relaytest.Topics("order"), 2*len(first)+len(lost))
	if err != nil {
		t.Fatal(err)
	}
	replayed := map[string]bool{}
	seqs := map[string][]int{}
	for _, r := range recs {
		if r.Headers["replayed"] != "true" {
			continue
		}
		replayed[r.Headers["id"]] = true
		var p struct {
			Seq       int
			Aggregate string
		}
		if err := json.Unmarshal(r.Value, &p); err != nil {
			t.Fatal(err)
		}
		seqs[p.Aggregate] = append(seqs[p.Aggregate], p.Seq)
	}
	for _, e := range lost {
		if !replayed[e.ID] {
			t.Errorf("lost event %s was not re-published by %q", e.ID, command)
		}
	}
	for _, agg := range []string{"g-1", "g-2"} {
		if s := seqs[agg]; !slices.Equal(s, []int{0, 1, 2}) {
			t.Errorf("aggregate %s replayed in order %v, want [0 1 2]", agg, s)
		}
	}
}
