package relay_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/sink"
)

// Regression: the topic label of three metrics came from row values
// (--topic outbox.{aggregate_id}), so every new aggregate added series that
// Prometheus keeps for the life of the process: memory grew with user data.
func TestTopicLabelsAreBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 1})
	cfg := env.Config()
	cfg.Replication.Route.Topic = "outbox.{aggregate_id}"
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)

	n := sink.MaxTopicLabels + 30
	evs := make([]relaytest.Event, n)
	for i := range evs {
		evs[i] = relaytest.Event{AggregateType: "order", AggregateID: fmt.Sprintf("agg%d", i), EventType: "Created", Seq: i}
	}
	_, lsn := env.Insert(ctx, evs)
	env.WaitConfirmed(ctx, cfg.Replication.Slot, lsn)

	mfs, err := run.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, mf := range mfs {
		topics := map[string]bool{}
		var other float64
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() != "topic" {
					continue
				}
				topics[l.GetValue()] = true
				if l.GetValue() == sink.OtherTopics && m.Counter != nil {
					other += m.Counter.GetValue()
				}
			}
		}
		if len(topics) == 0 {
			continue
		}
		checked++
		if len(topics) > sink.MaxTopicLabels+1 {
			t.Errorf("%s has %d topic label values for %d topics, want at most %d", mf.GetName(), len(topics), n, sink.MaxTopicLabels+1)
		}
		if other < float64(n-sink.MaxTopicLabels) {
			t.Errorf("%s counts %v events as %q, want at least %d", mf.GetName(), other, sink.OtherTopics, n-sink.MaxTopicLabels)
		}
	}
	if checked < 3 {
		t.Errorf("%d metric families carry a topic label, want the 3 of received, produced and acked", checked)
	}
}
