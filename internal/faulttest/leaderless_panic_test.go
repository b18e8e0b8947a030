package faulttest_test

import (
	"context"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestLeaderlessPartitionDoesNotCrash pins a crash: a new record whose
// partition has no leader (a broker failover, a freshly auto-created
// topic) made sarama call the producer's backoff with retries == 0, which
// shifted by -1 and panicked on a sarama goroutine, ending the process.
// The record must wait and be delivered once the partition has a leader.
func TestLeaderlessPartitionDoesNotCrash(t *testing.T) {
	kafkatest.RequireKfake(t, "metadata that lists a partition without a leader")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 1})
	topic := relaytest.Topics("order")[0]
	// Metadata lists the topic's partition, with no leader.
	noLeader := env.Kafka.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Metadata}, Topic: topic, Partitions: []int32{0},
		Err: kerr.LeaderNotAvailable, Count: -1})
	cfg := env.Config()
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)

	// sarama fails the first record at its metadata lookup, which caches
	// the partition without a leader; the second then reaches the
	// partition's new producer, whose leader lookup fails with retries 0:
	// the path that panicked.
	ins, lsn := env.Insert(ctx, []relaytest.Event{
		{AggregateType: "order", AggregateID: "agg-1", EventType: "Created", Seq: 0},
		{AggregateType: "order", AggregateID: "agg-1", EventType: "Updated", Seq: 1},
	})
	if !eventually.True(ctx, 20*time.Millisecond, func() bool { return run.Metric("outbox_relay_sink_errors_total") >= 2 }) {
		t.Fatalf("the records never met the leader-less partition: %v", ctx.Err())
	}
	if got := env.Confirmed(ctx, cfg.Replication.Slot); got >= lsn {
		t.Fatalf("slot confirmed %s, past the event no leader took (ends by %s)", got, lsn)
	}
	noLeader.Remove()

	env.WaitConfirmed(ctx, cfg.Replication.Slot, lsn)
	recs, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), []string{topic}, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs[:2] {
		if r.Headers["id"] != ins[i].ID {
			t.Fatalf("offset %d holds %q, want event %s", i, r.Headers["id"], ins[i].ID)
		}
	}
	if st := run.Relay.State(); st.Phase == relay.PhaseStopped {
		t.Fatalf("relay stopped: %s", st.Detail)
	}
	t.Logf("delivered after %v sink errors and %v reconnects", run.Metric("outbox_relay_sink_errors_total"), run.Metric("outbox_relay_reconnects_total"))
}
