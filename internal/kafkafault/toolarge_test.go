package kafkafault_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/faulttest"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/relay"
)

const (
	// topicLimit is the load topics' max.message.bytes in the too-large
	// test: far above a load event, below bigPayload.
	topicLimit = 64 << 10
	// bigAggregate is the aggregate of the oversized event and of the
	// valid events around it in its transaction.
	bigAggregate = "big-agg"
)

// bigPayload is one event's payload, above topicLimit (and below the
// relay's own --kafka-max-message-bytes, so the broker is the one that
// refuses it).
var bigPayload = fmt.Sprintf(`{"seq": 3, "blob": %q}`, strings.Repeat("x", 100<<10))

// TestEventAboveTopicLimit (fault 4) writes, among a steady load, one
// event larger than its topic's max.message.bytes, in a transaction
// with valid events of its aggregate before and after it, batched
// together (a linger). The broker refuses the whole batch; only that
// event may be treated as undeliverable:
//
//   - dead-letter: exactly one dead letter, for that event; every other
//     event is delivered in per-aggregate order, with no reconnect;
//   - halt: the relay stops with an error naming that event, the topic
//     and the fix; the slot stays before its transaction's end; every
//     event the slot confirmed is delivered, and none after it in its partition
//     (else, once the limit is raised and the relay restarted as the
//     halt says, the oversized event lands after them).
func TestEventAboveTopicLimit(t *testing.T) {
	c := edge.get(t)
	for _, mode := range []relay.Undeliverable{relay.DeadLetter, relay.Halt} {
		t.Run(string(mode), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			e := newEnv(t, c, "toolarge-"+string(mode))
			cfg := e.config()
			cfg.Relay.OnUndeliverable = mode
			cfg.Sink.Linger = 20 * time.Millisecond // the big event's transaction goes in one batch
			limited := maps.Clone(appendTime)
			limited["max.message.bytes"] = fmt.Sprint(topicLimit)
			e.createTopics(ctx, t, 3, limited, e.loadTopics()...)
			e.createTopics(ctx, t, 1, nil, cfg.Relay.DeadLetterTopic)
			run, load, slot := e.underLoad(ctx, t, cfg, 300)

			before, after, bigID, from, to := insertBig(ctx, t, e)
			load.WaitWritten(ctx, t, len(load.Written())+300)
			if mode == relay.Halt {
				checkTooLargeHalt(ctx, t, e, run, load, slot, before, after, bigID, from, to)
				return
			}
			written := load.Stop()
			faulttest.CheckAcknowledged(ctx, t, e.Env, written)
			rep, recs := e.verify(ctx, t, bigID)
			checked := checkTrail(t, slot(), written, recs)
			dead := e.read(ctx, t, cfg.Relay.DeadLetterTopic)
			if len(dead) != 1 || dead[0].Headers[relay.HeaderID] != bigID {
				t.Fatalf("%d dead letters %v, want exactly one, for event %s", len(dead), deadIDs(dead), bigID)
			}
			if h := dead[0].Headers[relay.HeaderError]; !strings.Contains(h, "too large") {
				t.Errorf("dead letter's error header %q does not say the event is too large", h)
			}
			reconnects, retries := metrics(run)
			if reconnects != 0 {
				t.Errorf("%v reconnects: dead-lettering must not restart the session", reconnects)
			}
			waitReady(ctx, t, run, 3*time.Second)
			t.Logf("one %d-byte event among %d: dead letter headers %v; %v batches refused whole and resent one per request; "+
				"%d events checked acked before confirmed",
				len(bigPayload), rep.Written+1, dead[0].Headers, run.Metric("outbox_relay_sink_batch_isolations_total"), checked)
			result{Report: rep, DeadLetters: len(dead), Reconnects: reconnects, Retries: retries}.
				log(t, "event above the topic's max.message.bytes: dead-letter")
		})
	}
}

// insertBig writes bigAggregate's events 0 to 6 in one transaction, the
// one with seq 3 above topicLimit. It returns the ids of the valid events
// before and after the big one and its own, and positions before the
// transaction and at or past its end.
func insertBig(ctx context.Context, t *testing.T, e *env) (before, after []string, bigID string, from, to outboxrelay.LSN) {
	t.Helper()
	from = e.CurrentLSN(ctx)
	err := pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error {
		for seq := range 7 {
			payload := fmt.Sprintf(`{"seq": %d}`, seq)
			if seq == 3 {
				payload = bigPayload
			}
			var id string
			if err := tx.QueryRow(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
				VALUES ('order', $1, 'Updated', $2::jsonb) RETURNING id::text`, bigAggregate, payload).Scan(&id); err != nil {
				return err
			}
			switch {
			case seq < 3:
				before = append(before, id)
			case seq == 3:
				bigID = id
			default:
				after = append(after, id)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("insert the oversized event's transaction: %v", err)
	}
	return before, after, bigID, from, e.CurrentLSN(ctx)
}

// checkTooLargeHalt checks the halt: the error names the event, the
// topic and the fix; the slot never passed its transaction; everything
// before it reached Kafka, and nothing of its aggregate after it.
func checkTooLargeHalt(ctx context.Context, t *testing.T, e *env, run *relaytest.Running, load *faulttest.Load,
	slot func() []slotSample, before, after []string, bigID string, from, to outboxrelay.LSN) {
	t.Helper()
	err := waitStopped(ctx, t, run)
	var ue *relay.UndeliverableError
	if !errors.As(err, &ue) {
		t.Fatalf("relay stopped with %v, want a *relay.UndeliverableError", err)
	}
	msg := err.Error()
	for _, want := range []string{bigID, fmt.Sprintf("%q", e.topic("order")), "too large", "max.message.bytes",
		"outbox-relay slot skip --event " + bigID} {
		if !strings.Contains(msg, want) {
			t.Errorf("halt message %q does not name %q", msg, want)
		}
	}
	written := load.Stop()
	samples := slot()
	held := heldBelow(t, samples, samples[0].at, time.Now(), to)
	recs := e.read(ctx, t, e.loadTopics()...)
	got := map[string]bool{}
	for _, r := range recs {
		got[r.Headers["id"]] = true
	}
	// The sink stops sending at the refused record (so nothing of its
	// aggregate lands ahead of it), which may leave earlier events of
	// other partitions unsent: those stay behind the slot and are resent
	// on restart. Lost would be one behind the slot's position and not in
	// Kafka.
	confirmed, err := e.confirmed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for _, w := range written {
		if w.After <= min(from, confirmed) && !got[w.ID] {
			missing = append(missing, w.ID)
		}
	}
	_ = before // in the refused transaction: behind the slot, resent on restart
	if got[bigID] {
		t.Errorf("the oversized event %s is in Kafka", bigID)
	}
	for _, id := range after {
		if got[id] {
			t.Errorf("DEFECT: event %s of %s, after the oversized one in its partition, reached Kafka while the relay halted: "+
				"once the topic's limit is raised and the relay restarted (the fix the halt names), the oversized event lands after it, "+
				"out of its aggregate's order", id, bigAggregate)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d events confirmed by the slot (at %s) are not in Kafka, e.g. %v", len(missing), confirmed, missing[:min(5, len(missing))])
	}
	reconnects, retries := metrics(run)
	t.Logf("halt message: %s", msg)
	t.Logf("slot held at %s (< %s, the oversized event's transaction end); at the halt %d of the %d events written are in Kafka, "+
		"every one the slot confirmed among them", held, to, len(got), len(written)+7)
	result{Report: faulttest.Report{Written: len(written) + 7, Delivered: len(got), Missing: len(missing)}, Reconnects: reconnects, Retries: retries}.
		log(t, "event above the topic's max.message.bytes: halt")
}

func deadIDs(recs []kafkatest.Record) []string {
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.Headers[relay.HeaderID])
	}
	return ids
}
