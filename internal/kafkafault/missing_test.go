package kafkafault_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/relay"
)

// ghostType routes to a topic nobody created, on brokers with
// auto.create.topics.enable=false.
const ghostType = "ghost"

// ghostEvents are routed to the missing topic in one transaction: more
// than the 3 failed lookups after which sarama stops looking the topic up
// for 10 s (its circuit breaker).
const ghostEvents = 6

// TestMissingTopic (fault 5) routes events, between valid ones, to a
// topic that does not exist on brokers with auto.create.topics.enable=false
// (the shared edge node). It is not a transient failure:
//
//   - halt: the relay stops with an error naming the first such event,
//     the topic (quoted as routed) and the fix, without a loop of
//     reconnects or produce retries while it finds out; the slot stays
//     before the event, and the events before it are delivered;
//   - dead-letter: one dead letter for each of them, every other event
//     delivered, and no reconnect. This pins a livelock: sarama stops
//     looking a topic up for 10 s after three failed lookups (its circuit
//     breaker) and fails the topic's later records with a retriable
//     error, so with more than three such events in flight the session
//     restarted, dead-lettered three again, and never got past them.
func TestMissingTopic(t *testing.T) {
	c := edge.get(t)
	for _, mode := range []relay.Undeliverable{relay.Halt, relay.DeadLetter} {
		t.Run(string(mode), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			e := newEnv(t, c, "missing-"+string(mode))
			cfg := e.config()
			cfg.Relay.OnUndeliverable = mode
			// Nobody creates the topic: this pins the final failure, which
			// the default TopicWait postpones by restarting sessions for a
			// minute (TestMissingTopicCreatedLate covers the wait).
			cfg.Sink.TopicWait = 0
			e.createTopics(ctx, t, 3, nil, e.topic("order"), cfg.Relay.DeadLetterTopic)
			run := relaytest.Start(t, cfg)
			run.WaitReady(ctx, t)

			ev := func(typ string, seq int) relaytest.Event {
				return relaytest.Event{AggregateType: typ, AggregateID: "agg-1", EventType: "Updated", Seq: seq}
			}
			first, _ := e.Insert(ctx, []relaytest.Event{ev("order", 0), ev("order", 1), ev("order", 2)})
			begin := time.Now()
			var ghosts []relaytest.Event
			for seq := range ghostEvents {
				ghosts = append(ghosts, ev(ghostType, seq))
			}
			ghost, ghostEnd := e.Insert(ctx, ghosts)
			e.Insert(ctx, []relaytest.Event{ev("order", 3), ev("order", 4)})

			if mode == relay.Halt {
				err := waitStopped(ctx, t, run)
				took := time.Since(begin)
				var ue *relay.UndeliverableError
				if !errors.As(err, &ue) {
					t.Fatalf("relay stopped with %v, want a *relay.UndeliverableError", err)
				}
				msg := err.Error()
				for _, want := range []string{ghost[0].ID, fmt.Sprintf("%q", e.topic(ghostType)),
					"create the topic, or enable auto.create.topics.enable"} {
					if !strings.Contains(msg, want) {
						t.Errorf("halt message %q does not name %q", msg, want)
					}
				}
				reconnects, retries := metrics(run)
				if reconnects > 1 || retries > 20 {
					t.Errorf("%v reconnects and %v produce retries in %s before halting: a busy loop", reconnects, retries, took.Round(time.Millisecond))
				}
				if got, err := e.confirmed(ctx); err != nil || got >= ghostEnd {
					t.Errorf("slot confirmed %s (%v), at or past the event routed to the missing topic (ending by %s)", got, err, ghostEnd)
				}
				recs := e.read(ctx, t, e.topic("order"))
				got := map[string]bool{}
				for _, r := range recs {
					got[r.Headers["id"]] = true
				}
				for _, in := range first {
					if !got[in.ID] {
						t.Errorf("event %s, written before the one routed to the missing topic, is not in Kafka", in.ID)
					}
				}
				t.Logf("halted %s after the event was written, with %v reconnects and %v produce retries: %s",
					took.Round(time.Millisecond), reconnects, retries, msg)
				result{Recovery: took, Reconnects: reconnects, Retries: retries}.log(t, "missing topic, auto-create off: halt")
				return
			}
			var ghostIDs []string
			for _, g := range ghost {
				ghostIDs = append(ghostIDs, g.ID)
			}
			// Every lookup of the missing topic takes sarama's metadata
			// retries (10 x 500 ms): a few per event is the most it may take.
			wait, cancelWait := context.WithTimeout(ctx, time.Duration(len(ghost))*15*time.Second)
			defer cancelWait()
			if !eventually.True(wait, 50*time.Millisecond, func() bool {
				got, err := e.confirmed(ctx)
				return err == nil && got >= ghostEnd
			}) {
				reconnects, _ := metrics(run)
				t.Fatalf("the slot never passed the %d events routed to the missing topic in %s: %v reconnects, "+
					"%v dead letters acked (dead letter ids %v, want %v), relay %s",
					len(ghost), time.Since(begin).Round(time.Second), reconnects, run.Metric("outbox_relay_events_dead_lettered_total"),
					deadIDs(e.read(ctx, t, cfg.Relay.DeadLetterTopic)), ghostIDs, run.Relay.State().Detail)
			}
			took := time.Since(begin)
			rep, _ := e.verify(ctx, t, ghostIDs...)
			dead := e.read(ctx, t, cfg.Relay.DeadLetterTopic)
			if ids := deadIDs(dead); !sameSet(ids, ghostIDs) {
				t.Errorf("dead letters %v, want one for each event routed to the missing topic: %v", ids, ghostIDs)
			}
			reconnects, retries := metrics(run)
			if reconnects != 0 {
				t.Errorf("%v reconnects: dead-lettering must not restart the session", reconnects)
			}
			waitReady(ctx, t, run, 3*time.Second)
			t.Logf("%d events dead-lettered and the slot past them %s after they were written", len(dead), took.Round(time.Millisecond))
			result{Report: rep, DeadLetters: len(dead), Recovery: took, Reconnects: reconnects, Retries: retries}.
				log(t, "missing topic, auto-create off: dead-letter")
		})
	}
}

// TestMissingTopicCreatedLate pins valid events halted on, or dead-
// lettered, because their topic was still being created: on brokers with
// auto-create off, the topic is created 8 s after events to it were
// written, longer than sarama's metadata retries (~5 s), after which a
// record to it was undeliverable at once. With the default TopicWait the
// relay restarts the session until the topic exists, then delivers every
// event once, in order; nothing halts or is dead-lettered.
func TestMissingTopicCreatedLate(t *testing.T) {
	c := edge.get(t)
	for _, mode := range []relay.Undeliverable{relay.Halt, relay.DeadLetter} {
		t.Run(string(mode), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			e := newEnv(t, c, "late-"+string(mode))
			cfg := e.config()
			cfg.Relay.OnUndeliverable = mode
			e.createTopics(ctx, t, 3, nil, cfg.Relay.DeadLetterTopic)
			run := relaytest.Start(t, cfg)
			run.WaitReady(ctx, t)

			var evs []relaytest.Event
			for seq := range 12 {
				evs = append(evs, relaytest.Event{AggregateType: "order", AggregateID: fmt.Sprintf("agg-%d", seq%3), EventType: "Updated", Seq: seq})
			}
			_, end := e.Insert(ctx, evs[:6])
			_, end = e.Insert(ctx, evs[6:])
			select {
			case <-run.Done():
				t.Fatalf("the relay stopped before the topic was created: %v", run.Err())
			case <-time.After(8 * time.Second):
			}
			if got, err := e.confirmed(ctx); err != nil || got >= end {
				t.Errorf("slot confirmed %s (%v), past the events (ending by %s), before their topic existed", got, err, end)
			}
			e.createTopics(ctx, t, 3, nil, e.topic("order"))
			created := time.Now()
			rep, _ := e.verify(ctx, t)
			took := time.Since(created)
			if rep.Written != len(evs) || rep.Delivered != len(evs) || rep.Duplicates != 0 {
				t.Errorf("%d events written, %d delivered, %d duplicates: want each of %d once", rep.Written, rep.Delivered, rep.Duplicates, len(evs))
			}
			select {
			case <-run.Done():
				t.Fatalf("the relay stopped: %v", run.Err())
			default:
			}
			if dead := e.read(ctx, t, cfg.Relay.DeadLetterTopic); len(dead) != 0 {
				t.Errorf("dead letters %v, want none", deadIDs(dead))
			}
			reconnects, retries := metrics(run)
			result{Report: rep, Recovery: took, Reconnects: reconnects, Retries: retries}.
				log(t, "missing topic created 8 s late, auto-create off: "+string(mode))
		})
	}
}
