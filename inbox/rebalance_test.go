package inbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
)

// waitGroup polls the broker's view of a consumer group until cond holds.
func (e *env) waitGroup(ctx context.Context, group string, cond func(state string, members int) bool) {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kafka.Addrs()...))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	var state string
	var members int
	if !eventually.True(ctx, 20*time.Millisecond, func() bool {
		req := kmsg.NewPtrDescribeGroupsRequest()
		req.Groups = []string{group}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil || len(resp.Groups) != 1 {
			return false
		}
		state, members = resp.Groups[0].State, len(resp.Groups[0].Members)
		return cond(state, members)
	}) {
		e.t.Fatalf("group %s stayed %s with %d members", group, state, members)
	}
}

// A second consumer joining while the first holds a record in flight:
// the first finishes it before its partitions are released, the second
// takes partitions over, and across the handover nothing is lost, nothing
// applied twice, and each aggregate's order is kept.
func TestRebalanceWithRecordInFlight(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const topic = "orders"
	e := newEnv(t, topic)
	recs := events(topic, "ev", 60, 6)
	e.produce(ctx, recs[:30]...)

	g := newGate("ev-20")
	a := e.start(e.config("g1", g.handler(recordEffect), topic))
	select {
	case <-g.entered:
	case <-ctx.Done():
		t.Fatal("the gated record never reached its handler")
	}
	b := e.start(e.config("g1", recordEffect, topic))
	// The rebalance waits for a's release, which waits for the record in
	// flight: held until b's join started it, then let go.
	e.waitGroup(ctx, "g1", func(state string, members int) bool { return state == "PreparingRebalance" })
	time.Sleep(300 * time.Millisecond) // the record stays in flight a while into the rebalance, not waiting for a result
	close(g.open)
	e.waitGroup(ctx, "g1", func(state string, members int) bool { return state == "Stable" && members == 2 })
	e.produce(ctx, recs[30:]...)
	e.waitEffects(ctx, len(recs))
	if !eventually.True(ctx, 50*time.Millisecond, func() bool {
		return b.metric("outbox_relay_inbox_processed_total") > 0
	}) {
		t.Fatal("the second consumer never applied a record: no partition moved")
	}
	for _, r := range []*running{a, b} {
		if err := r.shutdown(t, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	fs := e.effects(ctx)
	checkAppliedOnceInOrder(t, fs, recs)
	t.Logf("first consumer applied %v, second %v; skipped %v and %v",
		a.metric("outbox_relay_inbox_processed_total"), b.metric("outbox_relay_inbox_processed_total"),
		a.metric("outbox_relay_inbox_skipped_duplicates_total"), b.metric("outbox_relay_inbox_skipped_duplicates_total"))
}
