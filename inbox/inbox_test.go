package inbox_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
)

// events makes n records for topic over keys aggregates; the value is the
// record's sequence number within its aggregate.
func events(topic, prefix string, n, aggregates int) []record {
	out := make([]record, n)
	seq := map[string]int{}
	for i := range out {
		key := fmt.Sprintf("agg-%d", i%aggregates)
		out[i] = record{topic: topic, id: fmt.Sprintf("%s-%d", prefix, i), key: key, value: strconv.Itoa(seq[key])}
		seq[key]++
	}
	return out
}

// checkAppliedOnce fails for every event applied more than once.
func checkAppliedOnce(t *testing.T, fs []effect) {
	t.Helper()
	for id, n := range countByID(fs) {
		if n != 1 {
			t.Errorf("event %s applied %d times", id, n)
		}
	}
}

// checkAppliedOnceInOrder fails unless every record was applied exactly
// once, each aggregate's in order.
func checkAppliedOnceInOrder(t *testing.T, fs []effect, recs []record) {
	t.Helper()
	checkAppliedOnce(t, fs)
	if len(fs) != len(recs) {
		t.Fatalf("%d effects for %d events", len(fs), len(recs))
	}
	checkOrder(t, fs, recs)
}

// checkOrder fails unless, per aggregate (key), the effects' values run
// 0, 1, 2, ... : records of a partition applied in offset order.
func checkOrder(t *testing.T, fs []effect, recs []record) {
	t.Helper()
	keyOf := map[string]string{}
	for _, r := range recs {
		keyOf[r.id] = r.key
	}
	next := map[string]int{}
	for _, f := range fs {
		k, ok := keyOf[f.id]
		if !ok {
			continue
		}
		if f.value != strconv.Itoa(next[k]) {
			t.Fatalf("aggregate %s: applied value %s after %d values: order broken", k, f.value, next[k])
		}
		next[k]++
	}
}

func TestAppliesEachEventOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const topic = "orders"
	e := newEnv(t, topic)
	recs := events(topic, "ev", 40, 5)
	// The relay re-sends after a crash: the same ids again, later on.
	resent := append([]record(nil), recs[10:20]...)
	e.produce(ctx, append(recs, resent...)...)

	r := e.start(e.config("g1", recordEffect, topic))
	handled := func() float64 {
		return r.metric("outbox_relay_inbox_processed_total") + r.metric("outbox_relay_inbox_skipped_duplicates_total")
	}
	if !eventually.True(ctx, 20*time.Millisecond, func() bool { return handled() >= float64(len(recs)+len(resent)) }) {
		t.Fatalf("handled %v records, want %d", handled(), len(recs)+len(resent))
	}
	fs := e.effects(ctx)
	checkAppliedOnceInOrder(t, fs, recs)
	if got := r.metric("outbox_relay_inbox_skipped_duplicates_total"); got != float64(len(resent)) {
		t.Errorf("skipped_duplicates_total = %v, want %d", got, len(resent))
	}
}
