package faulttest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/faulttest"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/relay"
)

// topicLate is when the test creates the missing topic, after the first
// event to it was written: longer than sarama's metadata retries (10 x
// 500 ms), after which the producer reports the topic unknown.
const topicLate = 8 * time.Second

// TestTopicCreatedLate pins valid events halted on, or dead-lettered,
// because their topic was still being created: a record to a topic Kafka
// did not know yet (auto-create on a slow controller, the first event to
// a new routed topic) was undeliverable as soon as sarama's ~5 s of
// metadata retries ran out. With the product's default --kafka-topic-wait
// the relay restarts the session and resends until the topic exists:
// every event arrives once, in order, nothing halts or is dead-lettered.
func TestTopicCreatedLate(t *testing.T) {
	for _, mode := range []relay.Undeliverable{relay.Halt, relay.DeadLetter} {
		t.Run(string(mode), func(t *testing.T) {
			kafkatest.RequireKfake(t, "a broker with auto-create off")
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2, NoAutoCreate: true})
			cfg := env.Config() // the default TopicWait: what the product runs with
			cfg.Relay.OnUndeliverable = mode
			topic := relaytest.Topics("order")[0]
			createTopic(ctx, t, env, cfg.Relay.DeadLetterTopic)
			run := relaytest.Start(t, cfg)
			run.WaitReady(ctx, t)

			written, end := writeLateTopicEvents(ctx, env)
			begin := time.Now()
			select {
			case <-run.Done():
				t.Fatalf("the relay stopped %s after the events were written, before their topic was created: %v",
					time.Since(begin).Round(time.Millisecond), run.Err())
			case <-time.After(topicLate):
			}
			if got := env.Confirmed(ctx, cfg.Replication.Slot); got >= end {
				t.Errorf("slot confirmed %s, past the events (ending by %s), before their topic existed", got, end)
			}
			if n := run.Metric("outbox_relay_events_dead_lettered_total"); n != 0 {
				t.Errorf("%v events dead-lettered while their topic was being created", n)
			}
			createTopic(ctx, t, env, topic)
			created := time.Now()

			if !eventually.True(ctx, 20*time.Millisecond, func() bool { return env.Confirmed(ctx, cfg.Replication.Slot) >= end }) {
				t.Fatalf("slot confirmed %s, never past the events (ending by %s) after their topic was created; relay %s %q",
					env.Confirmed(ctx, cfg.Replication.Slot), end, run.Relay.State().Phase, run.Relay.State().Detail)
			}
			caughtUp := time.Since(created)
			rep := faulttest.Verify(ctx, t, env, cfg.Replication.Slot)
			if rep.Written != written || rep.Delivered != written || rep.Duplicates != 0 {
				t.Errorf("%d events written, %d in the table, %d delivered, %d duplicates: want each once", written, rep.Written, rep.Delivered, rep.Duplicates)
			}
			select {
			case <-run.Done():
				t.Fatalf("the relay stopped: %v", run.Err())
			default:
			}
			if n := run.Metric("outbox_relay_events_dead_lettered_total"); n != 0 {
				t.Errorf("%v events dead-lettered", n)
			}
			if dead, err := kafkatest.Count(ctx, env.Kafka.Addrs(), []string{cfg.Relay.DeadLetterTopic}); err != nil || dead != 0 {
				t.Errorf("%d records in the dead-letter topic (%v), want none", dead, err)
			}
			if n := sinkErrors(run, "undeliverable"); n != 0 {
				t.Errorf("%v produce failures counted undeliverable, want none", n)
			}
			reconnects := run.Metric("outbox_relay_reconnects_total")
			rep.Log(t, "topic created 8 s late ("+string(mode)+")", caughtUp)
			t.Logf("%v reconnects while the topic was missing; the slot passed the events %s after it was created",
				reconnects, caughtUp.Round(time.Millisecond))
		})
	}
}

// writeLateTopicEvents writes three transactions of events over three
// aggregates to the order topic and returns how many, and a position at or
// past the last commit.
func writeLateTopicEvents(ctx context.Context, env *relaytest.Env) (int, outboxrelay.LSN) {
	seq := 0
	var end outboxrelay.LSN
	for range 3 {
		var evs []relaytest.Event
		for range 4 {
			evs = append(evs, relaytest.Event{AggregateType: "order", AggregateID: fmt.Sprintf("agg-%d", seq%3), EventType: "Updated", Seq: seq})
			seq++
		}
		_, end = env.Insert(ctx, evs)
	}
	return seq, end
}

// createTopic creates topic with the env's partitions through a client of
// its own, as an operator or another application would.
func createTopic(ctx context.Context, t *testing.T, env *relaytest.Env, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.Kafka.Addrs()...), kgo.ClientID("topic-wait-test-admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, 2, 1
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10000
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("create topic %q: %v", topic, err)
	}
	for _, rt := range resp.Topics {
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil {
			t.Fatalf("create topic %q: %v", topic, err)
		}
	}
}

// sinkErrors is outbox_relay_sink_errors_total{kind=kind}.
func sinkErrors(run *relaytest.Running, kind string) float64 {
	mfs, err := run.Registry.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() != "outbox_relay_sink_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
