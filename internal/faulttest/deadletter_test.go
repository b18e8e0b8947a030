package faulttest_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/faulttest"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// poison describes an event that can never be delivered as configured.
type poison struct {
	name string
	// aggType routes it; setup prepares the table, config or broker.
	aggType string
	payload *string // nil inserts a NULL payload
	setup   func(t *testing.T, env *relaytest.Env, cfg *relaytest.Config)
	// The dead-letter copy: its error header contains errPart, and it
	// carries the original topic and payload when those are known.
	errPart   string
	origTopic string
	keepValue bool
}

var bigPayload = `{"blob": "` + strings.Repeat("x", 4000) + `"}`

func ptr(s string) *string { return &s }

var poisons = []poison{
	{
		name: "invalid topic from the template", aggType: "bad topic!", payload: ptr(`{"p": 1}`),
		errPart: "Kafka allows only", keepValue: true,
	},
	{
		name: "NULL payload", aggType: "nullpay", payload: nil,
		setup: func(t *testing.T, env *relaytest.Env, _ *relaytest.Config) {
			if _, err := env.Pool.Exec(t.Context(), "ALTER TABLE outbox ALTER COLUMN payload DROP NOT NULL"); err != nil {
				t.Fatal(err)
			}
		},
		errPart: "NULL payload",
	},
	{
		name: "larger than the producer's max message size", aggType: "big", payload: &bigPayload,
		setup: func(_ *testing.T, _ *relaytest.Env, cfg *relaytest.Config) {
			cfg.Sink.MaxMessageBytes = 2000
		},
		errPart: "MaxMessageBytes", origTopic: "outbox.event.big",
	},
	{
		name: "refused by the broker", aggType: "forbidden", payload: ptr(`{"p": 2}`),
		setup: func(t *testing.T, env *relaytest.Env, _ *relaytest.Config) {
			kafkatest.RequireKfake(t, "a broker that refuses writes to one topic (TOPIC_AUTHORIZATION_FAILED)")
			env.Kafka.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "outbox.event.forbidden",
				Err: kerr.TopicAuthorizationFailed, Count: -1})
		},
		errPart: "authoriz", origTopic: "outbox.event.forbidden", keepValue: true,
	},
}

// writeAround writes 3 transactions: good events, then good events with
// the poison event in the middle, then good events. It returns the poison's
// id and LSN range (after the previous commit, after its own commit).
func writeAround(ctx context.Context, t *testing.T, env *relaytest.Env, p poison, seq *int) (id string, from, to outboxrelay.LSN) {
	good := func(n int) []relaytest.Event {
		var evs []relaytest.Event
		for range n {
			evs = append(evs, relaytest.Event{AggregateType: "order", AggregateID: fmt.Sprintf("agg-%d", *seq%3), EventType: "Updated", Seq: *seq})
			*seq++
		}
		return evs
	}
	env.Insert(ctx, good(5))
	from = env.CurrentLSN(ctx)
	err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
		for _, ev := range good(3) {
			if _, err := tx.Exec(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
				VALUES ($1, $2, $3, jsonb_build_object('seq', $4::int))`, ev.AggregateType, ev.AggregateID, ev.EventType, ev.Seq); err != nil {
				return err
			}
		}
		if err := tx.QueryRow(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
			VALUES ($1, 'agg-0', 'Poison', $2::jsonb) RETURNING id::text`, p.aggType, p.payload).Scan(&id); err != nil {
			return err
		}
		for _, ev := range good(3) {
			if _, err := tx.Exec(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
				VALUES ($1, $2, $3, jsonb_build_object('seq', $4::int))`, ev.AggregateType, ev.AggregateID, ev.EventType, ev.Seq); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	to = env.CurrentLSN(ctx)
	env.Insert(ctx, good(5))
	return id, from, to
}

var lsnInMessage = regexp.MustCompile(`at LSN ([0-9A-F]+/[0-9A-F]+)`)

func TestUndeliverableHalts(t *testing.T) {
	for _, p := range poisons {
		t.Run(p.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2})
			cfg := env.Config()
			if p.setup != nil {
				p.setup(t, env, &cfg)
			}
			run := relaytest.Start(t, cfg)
			run.WaitReady(ctx, t)
			seq := 0
			id, from, to := writeAround(ctx, t, env, p, &seq)

			select {
			case <-run.Done():
			case <-ctx.Done():
				t.Fatal("the relay did not stop at the undeliverable event")
			}
			err := run.Err()
			var ue *relay.UndeliverableError
			if !errors.As(err, &ue) {
				t.Fatalf("relay stopped with %v, want an *relay.UndeliverableError", err)
			}
			msg := err.Error()
			for _, want := range []string{id, p.errPart, "outbox-relay slot skip --event " + id + " --yes"} {
				if !strings.Contains(msg, want) {
					t.Errorf("halt message %q does not name %q", msg, want)
				}
			}
			m := lsnInMessage.FindStringSubmatch(msg)
			if m == nil {
				t.Fatalf("halt message %q names no LSN", msg)
			}
			if lsn, perr := pglogrepl.ParseLSN(m[1]); perr != nil || lsn <= from || lsn >= to {
				t.Errorf("halt message names LSN %s, not the poison event's (between %s and %s)", m[1], from, to)
			}
			if got := env.Confirmed(ctx, cfg.Replication.Slot); got >= to {
				t.Errorf("slot confirmed %s, past the poison event's transaction (ends by %s)", got, to)
			}
			if st := run.Relay.State(); st.Phase != relay.PhaseStopped || !strings.Contains(st.Detail, id) {
				t.Errorf("state %s %q, want stopped naming the event", st.Phase, st.Detail)
			}
			t.Logf("halt message: %s", msg)
		})
	}
}

func TestDeadLetter(t *testing.T) {
	for _, p := range poisons {
		t.Run(p.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2})
			cfg := env.Config()
			cfg.Relay.OnUndeliverable = relay.DeadLetter
			if p.setup != nil {
				p.setup(t, env, &cfg)
			}
			run := relaytest.Start(t, cfg)
			run.WaitReady(ctx, t)

			// Two poison events among good ones: the relay moves past both.
			seq := 0
			id1, from1, to1 := writeAround(ctx, t, env, p, &seq)
			id2, _, _ := writeAround(ctx, t, env, p, &seq)

			// Verify waits for the slot to pass everything, then checks that
			// every good event is in Kafka, in commit order per aggregate.
			rep := faulttest.Verify(ctx, t, env, cfg.Replication.Slot)
			if rep.Written != seq || rep.Duplicates != 0 {
				t.Errorf("good events: %d written, want %d; %d duplicates", rep.Written, seq, rep.Duplicates)
			}
			dead, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), []string{cfg.Relay.DeadLetterTopic}, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(dead) != 2 {
				t.Fatalf("%d dead-letter records, want 2", len(dead))
			}
			byID := map[string]kafkatest.Record{}
			for _, r := range dead {
				byID[r.Headers[relay.HeaderID]] = r
			}
			for _, id := range []string{id1, id2} {
				r, ok := byID[id]
				if !ok {
					t.Fatalf("no dead-letter record with id header %s; got %v", id, dead)
				}
				if string(r.Key) != id {
					t.Errorf("dead-letter key %q, want the event id %s", r.Key, id)
				}
				if !strings.Contains(r.Headers[relay.HeaderError], p.errPart) {
					t.Errorf("dead-letter error header %q does not contain %q", r.Headers[relay.HeaderError], p.errPart)
				}
				if got := r.Headers[relay.HeaderOriginalTopic]; got != p.origTopic {
					t.Errorf("dead-letter original_topic header %q, want %q", got, p.origTopic)
				}
				switch {
				case p.keepValue && !strings.Contains(string(r.Value), `"p"`):
					t.Errorf("dead-letter value %q, want the original payload", r.Value)
				case !p.keepValue && len(r.Value) != 0:
					t.Errorf("dead-letter value of %d bytes, want none (%s)", len(r.Value), p.name)
				}
			}
			lsn, err := pglogrepl.ParseLSN(byID[id1].Headers[relay.HeaderLSN])
			if err != nil || lsn <= from1 || lsn >= to1 {
				t.Errorf("dead-letter lsn header %q, not the poison event's (between %s and %s)", byID[id1].Headers[relay.HeaderLSN], from1, to1)
			}
			if got := run.Metric("outbox_relay_events_dead_lettered_total"); got != 2 {
				t.Errorf("outbox_relay_events_dead_lettered_total = %v, want 2", got)
			}
			if st := run.Relay.State(); st.Phase != relay.PhaseStreaming {
				t.Errorf("relay %s (%s), want it streaming past the poison events", st.Phase, st.Detail)
			}
			if got := run.Metric("outbox_relay_reconnects_total"); got != 0 {
				t.Errorf("%v reconnects: dead-lettering must not restart the session", got)
			}
			rep.Log(t, "dead-letter: "+p.name, 0)
		})
	}
}
