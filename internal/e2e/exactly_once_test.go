package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/faulttest"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

// exactlyOnce is how these tests run the relay; the commit interval is the
// default's, the status interval the tests' 200 ms.
var exactlyOnce = []string{"--exactly-once"}

// TestExactlyOnceThroughFaults runs the binary with --exactly-once under a
// steady load through two kill -9, an immediate Postgres restart, a broker
// restart and a standby takeover, then reads every topic with
// read_committed: each committed event must be there exactly once, in
// commit order per aggregate.
func TestExactlyOnceThroughFaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2, DataDir: t.TempDir()})
	active := start(t, env, 500*time.Millisecond, exactlyOnce...)
	active.waitReadyz(ctx, "streaming", streaming)
	load := faulttest.StartLoad(env, 2*time.Millisecond)
	fault := func(what string, do func()) {
		t.Helper()
		load.WaitWritten(ctx, t, len(load.Written())+400)
		do()
		t.Logf("%s after %d events written", what, len(load.Written()))
	}
	for i := range 2 {
		fault(fmt.Sprintf("kill -9 #%d", i+1), func() {
			active.kill()
			active = start(t, env, 500*time.Millisecond, exactlyOnce...)
		})
	}
	fault("immediate Postgres restart", func() {
		if err := pg.Restart(ctx, "immediate"); err != nil {
			t.Fatalf("restart postgres: %v", err)
		}
	})
	fault("broker restart", func() {
		if err := env.Kafka.Restart(); err != nil {
			t.Fatalf("restart kafka: %v", err)
		}
	})
	standby := start(t, env, 500*time.Millisecond, exactlyOnce...)
	standby.waitReadyz(ctx, "standby", func(code int, body string) bool {
		return code == http.StatusServiceUnavailable && strings.HasPrefix(body, "standby")
	})
	fault("kill -9 of the active relay, the standby takes over", active.kill)
	standby.waitReadyz(ctx, "streaming after the takeover", streaming)
	load.WaitWritten(ctx, t, len(load.Written())+400)
	load.Stop()

	// The table is the ground truth: the immediate restart may have lost
	// commits the load saw acknowledged (the test cluster runs fsync off).
	rep := faulttest.VerifyCommitted(ctx, t, env, env.Slot)
	if rep.Duplicates != 0 {
		var ex []string
		for id, n := range rep.Dups {
			if len(ex) < 5 {
				ex = append(ex, fmt.Sprintf("%s (%d extra)", id, n))
			}
		}
		t.Errorf("--exactly-once: %d duplicates seen by a read_committed consumer, e.g. %s", rep.Duplicates, strings.Join(ex, ", "))
	}
	t.Logf("the standby dropped %v events Postgres re-sent that Kafka already held",
		standby.metric("outbox_relay_sink_already_committed_total"))
	rep.Log(t, "--exactly-once: kill -9 x2, Postgres immediate restart, broker restart, standby takeover", 0)
}

// TestExactlyOnceHugeTransaction writes 100,000 events in one Postgres
// transaction and kills the --exactly-once relay in its middle: the
// Kafka transactions it committed hold part of the Postgres transaction
// (the in-flight cap is a tenth of it), and the next process must drop
// exactly those when Postgres sends the transaction again from its start.
func TestExactlyOnceHugeTransaction(t *testing.T) {
	const events, capEvents = 100000, 10000
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2})
	args := append([]string{"--max-in-flight", fmt.Sprint(capEvents)}, exactlyOnce...)
	first := start(t, env, time.Second, args...)
	first.waitReadyz(ctx, "streaming", streaming) // the slot exists: it will see the transaction
	if _, err := env.Pool.Exec(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
		SELECT (ARRAY['order','payment'])[1 + i % 2], 'agg-' || (i % 50), 'Updated', jsonb_build_object('seq', i)
		FROM generate_series(1, $1) AS i`, events); err != nil {
		t.Fatal(err)
	}
	var acked float64
	if !eventually.True(ctx, 20*time.Millisecond, func() bool {
		acked = first.metric("outbox_relay_events_acked_total")
		return acked >= events/3
	}) {
		t.Fatalf("only %v events acked", acked)
	}
	peak := first.metric("outbox_relay_inflight_peak_events")
	first.kill()
	if acked >= events {
		t.Fatalf("all %v events were acked before the kill: the test proved nothing", acked)
	}
	if peak > capEvents {
		t.Errorf("%v events in flight at the peak, over the cap of %d", peak, capEvents)
	}
	second := start(t, env, time.Second, args...)
	rep := faulttest.VerifyCommitted(ctx, t, env, env.Slot)
	if rep.Delivered != events || rep.Duplicates != 0 {
		t.Errorf("%d of %d events delivered, %d duplicates; want all, none", rep.Delivered, events, rep.Duplicates)
	}
	dropped := second.metric("outbox_relay_sink_already_committed_total")
	if dropped < acked {
		t.Errorf("the second relay dropped %v re-sent events as already in Kafka; %v were acked (committed) before the kill", dropped, acked)
	}
	t.Logf("kill -9 with %v of %d events committed to Kafka (peak %v in flight); the next process dropped %v re-sent events",
		acked, events, peak, dropped)
}

// TestExactlyOnceFencedWaitsAsStandby starts another producer with the
// relay's transactional.id, as a relay taking the slot over does: the
// relay is fenced, counts it, and waits as a standby rather than fencing
// back at once; with the slot still free it streams again after
// --standby-poll, and a read_committed consumer sees every event once.
func TestExactlyOnceFencedWaitsAsStandby(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2})
	p := start(t, env, 500*time.Millisecond, exactlyOnce...)
	p.waitReadyz(ctx, "streaming", streaming)
	load := faulttest.StartLoad(env, 2*time.Millisecond)
	load.WaitWritten(ctx, t, 300)

	var systemID string
	if err := env.Pool.QueryRow(ctx, "SELECT system_identifier::text FROM pg_control_system()").Scan(&systemID); err != nil {
		t.Fatal(err)
	}
	fence(ctx, t, env, "outbox-relay-"+systemID+"-"+env.Slot)
	if !eventually.True(ctx, 20*time.Millisecond, func() bool { return p.metric("outbox_relay_sink_fenced_total") >= 1 }) {
		t.Fatal("the relay never counted itself fenced")
	}
	p.waitReadyz(ctx, "streaming again", streaming)
	load.WaitWritten(ctx, t, len(load.Written())+300)
	load.Stop()
	rep := faulttest.VerifyCommitted(ctx, t, env, env.Slot)
	if rep.Duplicates != 0 {
		t.Errorf("%d duplicates seen by a read_committed consumer after the fencing", rep.Duplicates)
	}
	rep.Log(t, "--exactly-once: another producer takes the transactional.id", 0)
}

// fence starts a transactional producer with id, which fences every older
// producer with it, and aborts its own transaction.
func fence(ctx context.Context, t *testing.T, env *relaytest.Env, id string) {
	t.Helper()
	const topic = "fencer"
	if err := env.Kafka.CreateTopic(ctx, topic, 1, nil); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.Kafka.Addrs()...), kgo.TransactionalID(id))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("fence")}).FirstErr(); err != nil {
		t.Fatalf("produce as %s: %v", id, err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
}
