package faulttest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/faulttest"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

func TestPostgresRestartMidStream(t *testing.T) {
	// A server of its own: restarting the shared one would disturb the
	// other tests. synchronous_commit on, so an acknowledged commit
	// survives the immediate (crash-like) shutdown.
	srv := pgtest.New(t, pgtest.Options{Settings: map[string]string{"synchronous_commit": "on"}})
	for _, mode := range []string{"fast", "immediate"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			env := relaytest.NewEnv(t, srv, kafkatest.Options{Partitions: 2})
			cfg := env.Config()
			run := relaytest.Start(t, cfg)
			run.WaitReady(ctx, t)
			load := faulttest.StartLoad(env, 2*time.Millisecond)
			load.WaitWritten(ctx, t, 300)

			if err := srv.Restart(ctx, mode); err != nil {
				t.Fatalf("restart postgres (%s): %v", mode, err)
			}
			restarted := time.Now()
			env.Pool.Reset() // drop the pool's dead connections
			n := len(load.Written())
			load.WaitWritten(ctx, t, n+300)
			recovery := faulttest.CatchUp(ctx, t, env, cfg.Replication.Slot, restarted)
			written := load.Stop()
			faulttest.CheckAcknowledged(ctx, t, env, written)
			rep := faulttest.Verify(ctx, t, env, cfg.Replication.Slot)
			if got := run.Metric("outbox_relay_reconnects_total"); got == 0 {
				t.Errorf("no reconnect after a %s restart of Postgres", mode)
			}
			t.Logf("%d transactions failed while Postgres restarted", load.Failures())
			rep.Log(t, fmt.Sprintf("postgres restart (%s) mid-stream", mode), recovery)
		})
	}
}

func TestWALSenderTimeoutWithSlowBroker(t *testing.T) {
	// With wal_sender_timeout at 5 s and the reader blocked on the
	// in-flight cap for much longer, Postgres ends the replication
	// connection unless the relay keeps sending status updates on its own
	// timer while it waits.
	kafkatest.RequireKfake(t, "a broker that holds produce answers for 12 s")
	const walSenderTimeout = 5 * time.Second
	srv := pgtest.New(t, pgtest.Options{Settings: map[string]string{"wal_sender_timeout": "5s"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, srv, kafkatest.Options{Partitions: 2})
	cfg := env.Config()
	cfg.Relay.MaxInFlight = 10
	cfg.Replication.StatusInterval = time.Second
	cfg.Sink.Timeout = 30 * time.Second // the producer waits for the slow broker
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)

	// The broker answers no produce request for 12 s, then answers all.
	// 600 events fill the cap, the relay's buffer and the stream's
	// handoff, so the stream itself stops reading.
	const hold = 12 * time.Second
	releaseAt := time.Now().Add(hold)
	c := env.Kafka.Cluster()
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { time.Sleep(time.Until(releaseAt)) }) // the broker's slowness
		return nil, nil, false                                       // then answer normally
	})
	const n = 600
	var evs []relaytest.Event
	for i := range n {
		evs = append(evs, relaytest.Event{AggregateType: faulttest.AggregateTypes[i%2], AggregateID: fmt.Sprintf("agg-%d", i%7), EventType: "Updated", Seq: i})
	}
	start := time.Now()
	for i := 0; i < n; i += 100 {
		env.Insert(ctx, evs[i:i+100])
	}
	rep := faulttest.Verify(ctx, t, env, cfg.Replication.Slot)
	blocked := time.Since(start)
	if blocked < hold {
		t.Fatalf("delivery took %s, less than the broker's %s hold: the test did not hold the reader", blocked, hold)
	}
	if got := run.Metric("outbox_relay_reconnects_total"); got != 0 {
		t.Errorf("%v reconnects: the replication connection was dropped while the reader waited on the slow broker", got)
	}
	if peak := run.Metric("outbox_relay_inflight_peak_events"); peak != float64(cfg.Relay.MaxInFlight) {
		t.Errorf("in-flight peak %v, want the cap %d: the reader was not held by backpressure", peak, cfg.Relay.MaxInFlight)
	}
	t.Logf("reader held by a slow broker for %s with wal_sender_timeout=%s; %v status updates sent",
		blocked.Round(time.Millisecond), walSenderTimeout, run.Metric("outbox_relay_replication_status_updates_total"))
	rep.Log(t, "slow broker, wal_sender_timeout=5s", 0)
}

// Before the fix, an immediate (crash-like) Postgres restart moved the
// slot back to the position Postgres had last saved, and the relay sent
// again every event from there, though its durable record said Kafka had
// acked them: after a crash every event since the last checkpoint came
// twice. Now events of transactions below the record are dropped, and
// only what the record had not covered yet comes again.
func TestPostgresCrashResendsNothingTheRecordCovers(t *testing.T) {
	srv := pgtest.New(t, pgtest.Options{Settings: map[string]string{"synchronous_commit": "on"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, srv, kafkatest.Options{Partitions: 2})
	cfg := env.Config()
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	// The slot's position on disk is saved here; the crash goes back to
	// about this point (Postgres saves a slot again only at checkpoints
	// and when its restart point moves).
	if err := srv.Exec(ctx, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	load := faulttest.StartLoad(env, 2*time.Millisecond)
	load.WaitWritten(ctx, t, 600)
	record := func() outboxrelay.LSN {
		var lsn outboxrelay.LSN
		if err := env.Pool.QueryRow(ctx, "SELECT lsn FROM outbox_relay.checkpoint WHERE slot = $1", cfg.Replication.Slot).Scan(&lsn); err != nil {
			t.Fatalf("read the checkpoint record: %v", err)
		}
		return lsn
	}
	// The crash must find events delivered past the saved slot position:
	// wait until the record covers the first 300 (a slow first produce, as
	// to a topic Apache Kafka creates on first use, would leave none).
	covers := load.Written()[299].After
	if !eventually.True(ctx, 20*time.Millisecond, func() bool { return record() >= covers }) {
		t.Fatalf("the record never covered the first 300 events (by %s): at %s", covers, record())
	}
	recorded := record()
	if err := srv.Restart(ctx, "immediate"); err != nil {
		t.Fatalf("restart postgres (immediate): %v", err)
	}
	env.Pool.Reset()
	n := len(load.Written())
	load.WaitWritten(ctx, t, n+300)
	written := load.Stop()
	faulttest.CheckAcknowledged(ctx, t, env, written)
	rep := faulttest.Verify(ctx, t, env, cfg.Replication.Slot)

	covered := 0
	for _, w := range written {
		if w.After > recorded {
			continue
		}
		covered++
		if d := rep.Dups[w.ID]; d > 0 {
			t.Errorf("event %s (seq %d), committed by %s, at or below the record %s read before the crash, was sent %d more times",
				w.ID, w.Seq, w.After, recorded, d)
		}
	}
	skipped := metricWithLabel(t, run, "outbox_relay_replication_skipped_changes_total", "kind", "delivered")
	if skipped == 0 {
		t.Fatalf("the slot did not move back below the record %s in the crash (no delivered event skipped): the test proved nothing", recorded)
	}
	t.Logf("%d events covered by the record before the crash; %v resent by Postgres and dropped; %d duplicates in all (what the record had not covered yet)",
		covered, skipped, rep.Duplicates)
	rep.Log(t, "postgres crash (immediate restart): the record skips what was delivered", 0)
}

// metricWithLabel is one labelled sample of a counter, or 0.
func metricWithLabel(t *testing.T, run *relaytest.Running, name, label, value string) float64 {
	t.Helper()
	mfs, err := run.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
