package relay_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/internal/wire"
	"github.com/outbox-relay/outbox-relay/relay"
)

// TestStandbyBuildsNoProducerWhilePolling pins a hot standby that built and
// tore down a whole Kafka producer (a bootstrap, metadata, an idempotent
// producer id) on every --standby-poll, while its stream failed at once
// because the slot was active: tens of thousands of bootstraps a day.
func TestStandbyBuildsNoProducerWhilePolling(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 1})
	cfg := env.Config()
	active := relaytest.Start(t, cfg)
	active.WaitReady(ctx, t)

	var sources, sinks atomic.Int64
	newSource, newSink, err := wire.Parts(wire.Config(cfg), zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	standby, err := relay.New(cfg.Relay,
		func() (relay.Source, error) {
			sources.Add(1)
			return newSource()
		},
		func(ack relay.AckFunc) (relay.Sink, error) {
			sinks.Add(1)
			return newSink(ack)
		})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- standby.Run(runCtx) }()
	defer func() { stop(); <-done }()

	const polls = 5
	if !eventually.True(ctx, 20*time.Millisecond, func() bool { return sources.Load() > polls }) {
		t.Fatalf("the standby polled %d times, want more than %d", sources.Load(), polls)
	}
	if st := standby.State(); st.Phase != relay.PhaseStandby {
		t.Fatalf("second relay is %s (%s), want standby", st.Phase, st.Detail)
	}
	if n := sinks.Load(); n != 0 {
		t.Fatalf("the standby built %d producers in %d polls, want none until it streams", n, sources.Load())
	}

	// Once the active relay is gone, the standby streams with one producer.
	if err := active.Stop(); err != nil {
		t.Fatal(err)
	}
	if !eventually.True(ctx, 10*time.Millisecond, func() bool { return standby.State().Ready() }) {
		t.Fatalf("the standby never took over: %+v", standby.State())
	}
	_, lsn := env.Insert(ctx, []relaytest.Event{{AggregateType: "order", AggregateID: "a", EventType: "Created"}})
	env.WaitConfirmed(ctx, cfg.Replication.Slot, lsn)
	if n := sinks.Load(); n != 1 {
		t.Errorf("the standby built %d producers to take over, want 1", n)
	}
}
