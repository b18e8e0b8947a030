package kafkafault_test

import (
	"context"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/apachekafka"
)

// downFor is how long a stopped broker stays down while the load writes.
const downFor = 3 * time.Second

// TestBrokerKilledUnderLoad (fault 1) stops the only broker under load,
// with SIGKILL (a crash) and with SIGTERM (a service manager's stop),
// keeps it down while the application writes on, and starts it again on
// the same data: the slot stays before the first event written while it
// was down, and afterwards every event is in Kafka, in per-aggregate
// order.
func TestBrokerKilledUnderLoad(t *testing.T) {
	c := apachekafka.New(t, apachekafka.Options{})
	for _, tc := range []struct {
		name string
		down func(t *testing.T, ctx context.Context)
	}{
		{"SIGKILL", func(t *testing.T, _ context.Context) {
			if err := c.Kill(0); err != nil {
				t.Fatal(err)
			}
		}},
		{"SIGTERM", func(t *testing.T, ctx context.Context) {
			if err := c.Terminate(0); err != nil {
				t.Fatal(err)
			}
			if err := c.WaitExit(ctx, 0); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			e := newEnv(t, c, "kill-"+tc.name)
			e.createTopics(ctx, t, 3, appendTime, e.loadTopics()...)
			run, load, slot := e.underLoad(ctx, t, e.config(), 300)

			downAt := time.Now()
			tc.down(t, ctx)
			faultAt := len(load.Written())
			load.WaitWritten(ctx, t, faultAt+1)
			// Nothing written from now on can be acked until the broker is
			// back: the slot must stay before the first such event's end.
			limit := load.Written()[faultAt].After
			time.Sleep(time.Until(downAt.Add(downFor))) // the fault's length: the load writes on meanwhile
			reconnectsDown, retriesDown := metrics(run)
			state := run.Relay.State()

			during := len(load.Written()) - faultAt
			healAt := time.Now()
			if err := c.Start(ctx, 0); err != nil {
				t.Fatal(err)
			}
			backAt := time.Now()
			s := e.settle(ctx, t, run, load, slot, backAt)
			held := heldBelow(t, s.samples, downAt, healAt, limit)
			t.Logf("broker down %s (%d events written meanwhile), back in %s; slot held at %s (< %s) until its restart; "+
				"%d events checked acked before confirmed; state while down: %s %q; while down %v reconnects, %v sink retries",
				healAt.Sub(downAt).Round(time.Millisecond), during, backAt.Sub(healAt).Round(time.Millisecond),
				held, limit, s.checked, state.Phase, state.Detail, reconnectsDown, retriesDown)
			s.Outage = backAt.Sub(downAt)
			s.log(t, "single broker "+tc.name+" under load, restarted")
		})
	}
}
