package faulttest_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

// With --exactly-once, a graceful stop while a partition cannot take
// writes (the producer retrying in place, a commit waiting on it) is
// bounded by ShutdownTimeout, as in the default mode: the feed does not
// wait for the commit to let go of the producer.
func TestExactlyOnceGracefulStopDuringPartitionOutage(t *testing.T) {
	kafkatest.RequireKfake(t, "produce faults")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 1})
	topic := relaytest.Topics("order")[0]
	cfg := env.Config()
	cfg.Sink.Transactions.Enabled = true
	cfg.Relay.ShutdownTimeout = 2 * time.Second
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	f := env.Kafka.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotEnoughReplicas, Count: -1})
	for i := range 3 {
		env.Insert(ctx, []relaytest.Event{{AggregateType: "order", AggregateID: "agg-1", EventType: "Created", Seq: i}})
		time.Sleep(300 * time.Millisecond)
	}
	stopped := make(chan time.Duration, 1)
	start := time.Now()
	go func() { _ = run.Stop(); stopped <- time.Since(start) }()
	select {
	case d := <-stopped:
		t.Logf("graceful stop took %s (ShutdownTimeout %s)", d, cfg.Relay.ShutdownTimeout)
	case <-time.After(15 * time.Second):
		t.Errorf("graceful stop still running 15s after the signal, ShutdownTimeout is %s", cfg.Relay.ShutdownTimeout)
		f.Remove()
		t.Logf("stopped %s after the signal, once the partition took writes again", <-stopped)
		return
	}
	f.Remove()
}
