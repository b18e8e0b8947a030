package relay_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/sink"
)

var aggregateTypes = []string{"order", "payment", "shipment"}

// writeMixed writes n events over 40 aggregates in transactions of 1 to 100
// rows, in order, and returns them with the LSN after the last commit.
func writeMixed(ctx context.Context, env *relaytest.Env, n int, seed uint64) ([]relaytest.Inserted, uint64) {
	rng := rand.New(rand.NewPCG(seed, seed))
	var all []relaytest.Inserted
	var last uint64
	for seq := 0; seq < n; {
		size := min(1+rng.IntN(100), n-seq)
		batch := make([]relaytest.Event, size)
		for i := range batch {
			agg := rng.IntN(40)
			batch[i] = relaytest.Event{
				AggregateType: aggregateTypes[agg%len(aggregateTypes)],
				AggregateID:   fmt.Sprintf("agg-%d", agg),
				EventType:     "Updated",
				Seq:           seq,
				Headers:       map[string]string{"traceparent": fmt.Sprintf("00-%032x-%016x-01", seq+1, seq+1)},
			}
			seq++
		}
		ins, lsn := env.Insert(ctx, batch)
		all = append(all, ins...)
		last = uint64(lsn)
	}
	return all, last
}

func TestDeliversEveryEventWithRoutingAndOrder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 4})
	cfg := env.Config()
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)

	const n = 5000
	written, lastLSN := writeMixed(ctx, env, n, 1)
	recs, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), relaytest.Topics(aggregateTypes...), n)
	if err != nil {
		t.Fatal(err)
	}
	env.WaitConfirmed(ctx, cfg.Replication.Slot, relaytestLSN(lastLSN))

	byID := make(map[string]kafkatest.Record, len(recs))
	for _, r := range recs {
		if _, dup := byID[string(r.Key)]; dup {
			t.Errorf("event %s delivered twice without any failure", r.Key)
		}
		byID[string(r.Key)] = r
	}
	if len(byID) != n {
		t.Fatalf("got %d distinct events, want %d", len(byID), n)
	}
	lastSeq := map[string]int64{} // aggregate -> offset of its previous event
	for _, w := range written {
		r, ok := byID[w.ID]
		if !ok {
			t.Fatalf("event %s (seq %d) missing", w.ID, w.Seq)
		}
		wantTopic := "outbox.event." + w.AggregateType
		wantPart := sink.PartitionFor([]byte(w.AggregateID), 4)
		switch {
		case r.Topic != wantTopic:
			t.Fatalf("event %s on topic %q, want %q", w.ID, r.Topic, wantTopic)
		case r.Partition != wantPart:
			t.Fatalf("event %s on partition %d, want murmur2(aggregate_id) = %d", w.ID, r.Partition, wantPart)
		case string(r.Value) != w.Payload:
			t.Fatalf("event %s value %q, want the stored payload %q", w.ID, r.Value, w.Payload)
		case r.Headers["id"] != w.ID || r.Headers["event_type"] != w.EventType ||
			r.Headers["aggregate_type"] != w.AggregateType || r.Headers["aggregate_id"] != w.AggregateID:
			t.Fatalf("event %s headers %v do not carry its id/type/aggregate", w.ID, r.Headers)
		case r.Headers["traceparent"] != w.Headers["traceparent"]:
			t.Fatalf("event %s traceparent %q, want %q from the headers column", w.ID, r.Headers["traceparent"], w.Headers["traceparent"])
		case r.Timestamp.IsZero() || time.Since(r.Timestamp) > 5*time.Minute:
			t.Fatalf("event %s timestamp %v is not its commit time", w.ID, r.Timestamp)
		}
		// Written order per aggregate must be offset order in its partition.
		key := w.AggregateType + "/" + w.AggregateID
		if prev, ok := lastSeq[key]; ok && r.Offset <= prev {
			t.Fatalf("aggregate %s: seq %d at offset %d, not after the previous event's %d", key, w.Seq, r.Offset, prev)
		}
		lastSeq[key] = r.Offset
	}
	if got := run.Metric("outbox_relay_events_acked_total"); got != n {
		t.Errorf("outbox_relay_events_acked_total = %v, want %d", got, n)
	}
}
