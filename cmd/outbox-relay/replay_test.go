package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

// serverNow is the server's clock_timestamp(), the clock created_at reads.
func (f *fixture) serverNow(ctx context.Context, t *testing.T) time.Time {
	t.Helper()
	var ts time.Time
	if err := f.Pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&ts); err != nil {
		t.Fatal(err)
	}
	return ts
}

// events is n transactions of one event for each of the aggregates, seq
// counting per aggregate from first.
func (f *fixture) insertRounds(ctx context.Context, aggs []string, first, n int) []relaytest.Inserted {
	var out []relaytest.Inserted
	for i := range n {
		evs := make([]relaytest.Event, 0, len(aggs))
		for _, a := range aggs {
			evs = append(evs, relaytest.Event{AggregateType: "order", AggregateID: a, EventType: "Updated", Seq: first + i,
				Headers: map[string]string{"traceparent": fmt.Sprintf("00-%032x-%016x-01", first+i, len(a))}})
		}
		in, _ := f.Insert(ctx, evs)
		out = append(out, in...)
	}
	return out
}

// replay re-publishes exactly the window's rows, with the relay's topic,
// key, partition, headers and value plus replayed=true, each aggregate in
// order, without touching the slot.
func TestReplayRepublishesTheWindowLikeRun(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
		topic string
	}{
		{"defaults", nil, "outbox.event.order"},
		{"template, key and partition", []string{"--topic", "ev.{aggregate_type}.{event_type}", "--key-column", "aggregate_id", "--partition-by", "key"}, "ev.order.Updated"},
	} {
		t.Run(tc.name, func(t *testing.T) { testReplayLikeRun(t, tc.flags, tc.topic) })
	}
}

func testReplayLikeRun(t *testing.T, flags []string, topic string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t)
	d := f.start(ctx, t, flags...)
	d.waitReady(ctx, t)

	aggs := []string{"a-1", "a-2", "a-3"}
	before := f.insertRounds(ctx, aggs, 0, 2)
	since := f.serverNow(ctx, t)
	window := f.insertRounds(ctx, aggs, 2, 4)
	until := f.serverNow(ctx, t)
	after := f.insertRounds(ctx, aggs, 6, 2)
	total := len(before) + len(window) + len(after)
	f.WaitConfirmed(ctx, f.slot, f.CurrentLSN(ctx))
	f.stopRelay(ctx, t, d)
	firstRun, err := kafkatest.ReadAll(ctx, f.Kafka.Addrs(), []string{topic}, total)
	if err != nil {
		t.Fatal(err)
	}
	confirmed := f.Confirmed(ctx, f.slot)

	win := append([]string{"replay", "--since", since.Format(time.RFC3339Nano), "--until", until.Format(time.RFC3339Nano),
		"--kafka-brokers", strings.Join(f.Kafka.Addrs(), ","), "--output", "json"}, flags...)
	out, err := f.cli(ctx, append(win, "--dry-run")...)
	if r := decodeReplay(t, out, err); r.Rows != len(window) || r.Topics[topic] != len(window) || r.Applied || r.Bytes <= 0 {
		t.Fatalf("dry run: %+v, want %d rows to %s", r, len(window), topic)
	}
	if _, err := f.cli(ctx, win...); !errors.Is(err, errNeedYes) {
		t.Fatalf("replay without --yes: %v, want it refused", err)
	}
	out, err = f.cli(ctx, append(win, "--yes")...)
	if r := decodeReplay(t, out, err); r.Rows != len(window) || !r.Applied {
		t.Fatalf("replay: %+v, want %d rows applied", r, len(window))
	}

	recs, err := kafkatest.ReadAll(ctx, f.Kafka.Addrs(), []string{topic}, total+len(window))
	if err != nil {
		t.Fatal(err)
	}
	checkReplayed(t, firstRun, recs, window)
	if got := f.Confirmed(ctx, f.slot); got != confirmed {
		t.Fatalf("slot moved from %s to %s during the replay", confirmed, got)
	}
	var slots int
	if err := f.Pool.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()").Scan(&slots); err != nil || slots != 1 {
		t.Fatalf("%d slots in the database (%v), want only the relay's", slots, err)
	}
}

// checkReplayed compares the replayed records with the relay's: exactly the
// window, same mapping, each aggregate in insert order.
func checkReplayed(t *testing.T, firstRun, recs []kafkatest.Record, window []relaytest.Inserted) {
	t.Helper()
	orig := map[string]kafkatest.Record{}
	for _, r := range firstRun {
		orig[r.Headers["id"]] = r
	}
	var replayed []kafkatest.Record // in partition offset order (ReadAll sorts)
	for _, r := range recs {
		if r.Headers["replayed"] == "true" {
			replayed = append(replayed, r)
		}
	}
	var got, want []string
	for _, r := range replayed {
		got = append(got, r.Headers["id"])
	}
	for _, e := range window {
		want = append(want, e.ID)
	}
	if !slices.Equal(sorted(got), sorted(want)) {
		t.Fatalf("replayed ids %v, want exactly the window's %v", got, want)
	}
	for _, r := range replayed {
		o := orig[r.Headers["id"]]
		h := maps.Clone(r.Headers)
		delete(h, "replayed")
		if r.Topic != o.Topic || r.Partition != o.Partition || string(r.Key) != string(o.Key) || string(r.Value) != string(o.Value) || !maps.Equal(h, o.Headers) {
			t.Errorf("replayed %s/%d key %s value %s headers %v\nrelay sent %s/%d key %s value %s headers %v",
				r.Topic, r.Partition, r.Key, r.Value, r.Headers, o.Topic, o.Partition, o.Key, o.Value, o.Headers)
		}
	}
	// Per aggregate, the replayed records come in insert order.
	seqs := map[string][]int{}
	for _, r := range replayed {
		var p struct {
			Seq       int
			Aggregate string
		}
		if err := json.Unmarshal(r.Value, &p); err != nil {
			t.Fatal(err)
		}
		seqs[p.Aggregate] = append(seqs[p.Aggregate], p.Seq)
	}
	for agg, s := range seqs {
		if !slices.IsSorted(s) {
			t.Errorf("aggregate %s replayed in order %v", agg, s)
		}
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func decodeReplay(t *testing.T, out string, err error) replayReport {
	t.Helper()
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	var r replayReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("replay --output json: %v\n%s", err, out)
	}
	return r
}
