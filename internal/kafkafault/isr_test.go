package kafkafault_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/apachekafka"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/relay"
)

// TestTwoOfThreeStopped (fault 3) stops two of three nodes gracefully
// under load. Every partition is left with one in-sync replica, below
// min.insync.replicas=2, so the last node refuses every write
// (NOT_ENOUGH_REPLICAS): the relay must wait (retrying in place, no
// reconnect loop), report stalled after Relay.StallTimeout, and confirm
// nothing past the last acked event; once both nodes are back,
// everything is delivered in per-aggregate order.
func TestTwoOfThreeStopped(t *testing.T) {
	c := apachekafka.New(t, apachekafka.Options{Nodes: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEnv(t, c, "isr")
	e.createTopics(ctx, t, 3, appendTime, e.loadTopics()...)
	cfg := e.config()
	run, load, slot := e.underLoad(ctx, t, cfg, 300)

	downAt := time.Now()
	for _, i := range []int{1, 2} {
		if err := c.Stop(i); err != nil {
			t.Fatal(err)
		}
	}
	stoppedAt := time.Now()
	faultAt := len(load.Written())
	load.WaitWritten(ctx, t, faultAt+1)
	// One in-sync replica left: nothing written from now on can be acked.
	limit := load.Written()[faultAt].After
	var stalled relay.State
	eventually.True(ctx, 20*time.Millisecond, func() bool {
		stalled = run.Relay.State()
		return stalled.Phase == relay.PhaseStalled || time.Since(stoppedAt) > cfg.Relay.StallTimeout+5*time.Second
	})
	stalledAfter := time.Since(stoppedAt)
	time.Sleep(time.Until(stoppedAt.Add(cfg.Relay.StallTimeout + 5*time.Second))) // the fault's length: the load writes on meanwhile
	reconnectsDown, retriesDown := metrics(run)
	errorsDown := run.Metric("outbox_relay_sink_errors_total")
	if stalled.Phase != relay.PhaseStalled || !strings.Contains(stalled.Detail, "no Kafka ack") {
		t.Errorf("with two of three nodes stopped the relay never reported stalled (last seen %s %q): /readyz would have stayed 200",
			stalled.Phase, stalled.Detail)
	}
	if reconnectsDown != 0 || errorsDown != 0 {
		t.Errorf("%v reconnects and %v final produce errors while too few replicas were in sync: the relay should wait, retrying in place",
			reconnectsDown, errorsDown)
	}

	during := len(load.Written()) - faultAt
	healAt := time.Now()
	for _, i := range []int{1, 2} {
		if err := c.Start(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	backAt := time.Now()
	s := e.settle(ctx, t, run, load, slot, backAt)
	held := heldBelow(t, s.samples, stoppedAt, healAt, limit)
	t.Logf("stopped 2 of 3 nodes in %s; %d events written until they were started again %s later (back in %s); "+
		"relay %s after %s (%q); slot held at %s (< %s); %d events checked acked before confirmed; "+
		"while down %v reconnects, %v sink retries, %v final sink errors",
		stoppedAt.Sub(downAt).Round(time.Millisecond), during, healAt.Sub(stoppedAt).Round(time.Millisecond),
		backAt.Sub(healAt).Round(time.Millisecond), stalled.Phase, stalledAfter.Round(time.Millisecond), stalled.Detail,
		held, limit, s.checked, reconnectsDown, retriesDown, errorsDown)
	s.Outage = backAt.Sub(stoppedAt)
	s.log(t, "two of three nodes stopped (NOT_ENOUGH_REPLICAS), restarted")
}
