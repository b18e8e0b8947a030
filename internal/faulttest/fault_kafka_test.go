package faulttest_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/faulttest"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// outage is how long Kafka stays unavailable while the load keeps writing.
const outage = 3 * time.Second

func TestKafkaOutage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inject func(c *kfake.Cluster) (heal func())
	}{
		{"produce fails retriably", func(c *kfake.Cluster) func() {
			h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
			return h.Remove
		}},
		{"connections dropped", func(c *kfake.Cluster) func() {
			var down atomic.Bool
			down.Store(true)
			c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				if !down.Load() {
					return nil, nil, false
				}
				return nil, errors.New("connection dropped by the test"), true // closes the connection
			})
			return func() { down.Store(false) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kafkatest.RequireKfake(t, "a produce fault injected into the broker")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2})
			cfg := env.Config()
			cfg.Relay.MaxInFlight = 100
			cfg.Relay.StallTimeout = time.Second
			run := relaytest.Start(t, cfg)
			run.WaitReady(ctx, t)
			load := faulttest.StartLoad(env, 2*time.Millisecond)
			load.WaitWritten(ctx, t, 200)

			heal := tc.inject(env.Kafka.Cluster())
			faultAt := len(load.Written())
			load.WaitWritten(ctx, t, faultAt+1)
			// The first event committed after the fault cannot be acked; the
			// slot must stay before its transaction's end.
			firstUnacked := load.Written()[faultAt].After
			peak := 0.0
			var confirmed outboxrelay.LSN
			var stalled relay.State
			deadline := time.Now().Add(outage)
			for time.Now().Before(deadline) {
				confirmed = max(confirmed, env.Confirmed(ctx, cfg.Replication.Slot))
				if confirmed >= firstUnacked {
					t.Fatalf("slot confirmed %s during the outage, past the unacked event ending at %s", confirmed, firstUnacked)
				}
				peak = max(peak, run.Metric("outbox_relay_inflight_peak_events"))
				if st := run.Relay.State(); st.Phase == relay.PhaseStalled {
					stalled = st
				}
				time.Sleep(20 * time.Millisecond) // sampling the slot and the gauge, not waiting for a result
			}
			during := len(load.Written()) - faultAt
			reconnects := run.Metric("outbox_relay_reconnects_total")
			heal()
			healed := time.Now()

			if peak > float64(cfg.Relay.MaxInFlight) {
				t.Errorf("in-flight peak %v above the cap %d: memory is not bounded during the outage", peak, cfg.Relay.MaxInFlight)
			}
			if peak < float64(cfg.Relay.MaxInFlight) {
				t.Errorf("in-flight peak %v never reached the cap %d with %d events written during the outage: the test did not exercise backpressure",
					peak, cfg.Relay.MaxInFlight, during)
			}
			// The producer retries in place (in order, with backoff) rather
			// than restarting the session and resending everything in flight.
			retries := run.Metric("outbox_relay_sink_retries_total")
			if retries == 0 {
				t.Errorf("no producer retry during a %s outage: the relay did not notice it", outage)
			}
			if max := float64(cfg.Relay.MaxInFlight) * outage.Seconds() / cfg.Sink.RetryBackoff.Seconds(); retries > max {
				t.Errorf("%v retries in %s: the producer is not backing off", retries, outage)
			}
			if reconnects != 0 {
				t.Errorf("%v reconnects during a retriable outage: the session was torn down and its in-flight events resent", reconnects)
			}
			if stalled.Ready() || !strings.Contains(stalled.Detail, "no Kafka ack") {
				t.Errorf("during the outage the relay never reported stalled (last seen %+v): /readyz would have stayed 200", stalled)
			}
			recovery := faulttest.CatchUp(ctx, t, env, cfg.Replication.Slot, healed)
			run.WaitReady(ctx, t)                            // stalled clears once acks flow again
			load.WaitWritten(ctx, t, len(load.Written())+50) // writes go on after the outage too
			load.Stop()
			// Regression: with a bounded retry count sarama gave up on a
			// batch, unmuted the partition and sent later batches of the same
			// aggregate first; the resent event then landed after them.
			rep := faulttest.Verify(ctx, t, env, cfg.Replication.Slot)
			t.Logf("outage %s: %d events written during it, in-flight peak %v (cap %d), %v producer retries, %v reconnects, slot held at %s (< %s)",
				outage, during, peak, cfg.Relay.MaxInFlight, retries, reconnects, confirmed, firstUnacked)
			rep.Log(t, "kafka unavailable: "+tc.name, recovery)
		})
	}
}

func TestKafkaRestartMidStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2, DataDir: t.TempDir()})
	cfg := env.Config()
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	load := faulttest.StartLoad(env, 2*time.Millisecond)
	load.WaitWritten(ctx, t, 300)

	if err := env.Kafka.Restart(); err != nil {
		t.Fatalf("restart broker: %v", err)
	}
	restarted := time.Now()
	n := len(load.Written())
	recovery := faulttest.CatchUp(ctx, t, env, cfg.Replication.Slot, restarted)
	load.WaitWritten(ctx, t, n+300)
	load.Stop()
	rep := faulttest.Verify(ctx, t, env, cfg.Replication.Slot)
	if rep.Written < n+300 {
		t.Fatalf("only %d events in the table", rep.Written)
	}
	t.Logf("broker restarted after %d events; %v reconnects", n, run.Metric("outbox_relay_reconnects_total"))
	rep.Log(t, "kafka restart mid-stream", recovery)
}

// TestOutageBeyondRetriesKeepsOrder: an outage that outlasts the
// producer's retries ends the session, and the next one resends from the
// slot. sarama, once it gives up on a batch, sends the partition's later
// batches; the producer's gate must keep every one of them out of Kafka
// until that resend, or an aggregate's later event lands first. With few
// retries this happens many times per outage (a retry count this low
// reordered about one run in six before the gate closed at a final
// error). The default retry count bounds sarama's per-partition memory
// (see sink.Config.RetryMax), so order may not depend on it.
func TestOutageBeyondRetriesKeepsOrder(t *testing.T) {
	kafkatest.RequireKfake(t, "a produce fault injected into the broker")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2})
	cfg := env.Config()
	cfg.Sink.RetryMax = 2
	cfg.Sink.RetryBackoff, cfg.Sink.RetryBackoffMax = 10*time.Millisecond, 20*time.Millisecond
	cfg.Relay.BackoffMin, cfg.Relay.BackoffMax = 20*time.Millisecond, 100*time.Millisecond
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	load := faulttest.StartLoad(env, 2*time.Millisecond)
	load.WaitWritten(ctx, t, 200)

	c := env.Kafka.Cluster()
	var down atomic.Bool
	down.Store(true)
	var dropped atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		// Every other produce request fails: sarama gives up on some
		// batches while later ones of the same partitions are queued.
		if !down.Load() || dropped.Add(1)%2 == 0 {
			return nil, nil, false
		}
		return nil, errors.New("connection dropped by the test"), true
	})
	load.WaitWritten(ctx, t, len(load.Written())+1500)
	down.Store(false)
	healed := time.Now()
	reconnects := run.Metric("outbox_relay_reconnects_total")
	if reconnects == 0 {
		t.Errorf("no reconnect: the producer never gave up on a batch, so the test did not exercise a resend")
	}
	recovery := faulttest.CatchUp(ctx, t, env, cfg.Replication.Slot, healed)
	load.Stop()
	rep := faulttest.Verify(ctx, t, env, cfg.Replication.Slot)
	t.Logf("%d produce requests dropped, %v reconnects", dropped.Load()/2, reconnects)
	rep.Log(t, "produce requests dropped beyond the producer's retries", recovery)
}
