package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/inbox"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
)

// failing wraps a handler: the first fails[id] attempts at id fail with
// errFor(id); it counts the attempts per id.
type failing struct {
	mu       sync.Mutex
	fails    map[string]int
	errFor   func(id string) error
	attempts map[string]int
}

func (f *failing) handler(next inbox.Handler) inbox.Handler {
	return func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		// The effect is written before the failure: a failed attempt
		// must leave nothing behind.
		if err := next(ctx, tx, msg); err != nil {
			return err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.attempts[msg.ID]++
		if f.attempts[msg.ID] <= f.fails[msg.ID] {
			return f.errFor(msg.ID)
		}
		return nil
	}
}

func (f *failing) attemptsOf(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts[id]
}

// A retryable failure is retried and applied once; a permanent failure,
// retries exhausted and a record without an id are each dead-lettered
// once with headers naming why and where from, and the records after them
// keep flowing in order.
func TestRetriesAndDeadLetters(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const topic, dlq = "orders", "g1.dead-letter"
	e := newEnv(t, topic)
	recs := events(topic, "ev", 30, 3)
	noID := record{topic: topic, key: "agg-1", value: "no id"}
	e.produce(ctx, append(recs[:20:20], noID)...)
	e.produce(ctx, recs[20:]...)

	permanent := errors.New("card declined")
	f := &failing{
		fails:    map[string]int{"ev-4": 2, "ev-9": 1, "ev-13": 99},
		attempts: map[string]int{},
		errFor: func(id string) error {
			if id == "ev-9" {
				return permanent
			}
			return inbox.Retryable(fmt.Errorf("payment service busy for %s", id))
		},
	}
	cfg := e.config("g1", f.handler(recordEffect), topic)
	cfg.MaxAttempts = 3
	r := e.start(cfg)

	want := len(recs) - 2 // ev-9 and ev-13 are dead-lettered
	fs := e.waitEffects(ctx, want)
	dead, err := kafkatest.ReadAll(ctx, e.kafka.Addrs(), []string{dlq}, 3)
	if err != nil {
		t.Fatalf("read the dead-letter topic: %v", err)
	}
	if err := r.shutdown(t, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	fs = e.effects(ctx)
	got := countByID(fs)
	for _, rec := range recs {
		wantN := 1
		if rec.id == "ev-9" || rec.id == "ev-13" {
			wantN = 0
		}
		if got[rec.id] != wantN {
			t.Errorf("event %s applied %d times, want %d", rec.id, got[rec.id], wantN)
		}
	}
	if len(fs) != want {
		t.Errorf("%d effects, want %d", len(fs), want)
	}
	if n := f.attemptsOf("ev-4"); n != 3 {
		t.Errorf("ev-4 attempted %d times, want 3 (two retryable failures)", n)
	}
	if n := f.attemptsOf("ev-13"); n != cfg.MaxAttempts {
		t.Errorf("ev-13 attempted %d times, want MaxAttempts %d", n, cfg.MaxAttempts)
	}
	if n := f.attemptsOf("ev-9"); n != 1 {
		t.Errorf("ev-9 (permanent failure) attempted %d times, want 1", n)
	}
	if got := r.metric("outbox_relay_inbox_retries_total"); got != 4 {
		t.Errorf("retries_total = %v, want 4 (2 for ev-4, 2 for ev-13)", got)
	}
	checkDeadLetters(t, dead, topic)
	checkOrderSkipping(t, fs, recs, "ev-9", "ev-13")
	if n, err := kafkatest.Count(ctx, e.kafka.Addrs(), []string{dlq}); err != nil || n != 3 {
		t.Errorf("dead-letter topic holds %d records (%v), want 3", n, err)
	}
}

func checkDeadLetters(t *testing.T, dead []kafkatest.Record, topic string) {
	t.Helper()
	byID := map[string]kafkatest.Record{}
	for _, d := range dead {
		byID[d.Headers["id"]] = d
		if d.Headers[inbox.HeaderOriginalTopic] != topic || d.Headers[inbox.HeaderOriginalPartition] == "" ||
			d.Headers[inbox.HeaderOriginalOffset] == "" || d.Headers[inbox.HeaderConsumerGroup] != "g1" {
			t.Errorf("dead letter without its origin: %v", d.Headers)
		}
	}
	for id, want := range map[string]string{
		"ev-9":  "card declined",
		"ev-13": "payment service busy for ev-13",
		"":      `record has no event id: no "id" header`,
	} {
		d, ok := byID[id]
		if !ok {
			t.Errorf("no dead letter for %q; got %v", id, dead)
			continue
		}
		if d.Headers[inbox.HeaderError] != want {
			t.Errorf("dead letter %q: error header %q, want %q", id, d.Headers[inbox.HeaderError], want)
		}
	}
	if d := byID["ev-13"]; d.Headers[inbox.HeaderAttempts] != "3" {
		t.Errorf("ev-13 dead letter: attempts header %q, want 3", d.Headers[inbox.HeaderAttempts])
	}
	if d := byID[""]; string(d.Value) != "no id" {
		t.Errorf("the id-less record's dead letter has value %q, want the original", d.Value)
	}
}

// checkOrderSkipping is checkOrder for a run where the skip ids were
// dead-lettered: their aggregates' sequences have those holes.
func checkOrderSkipping(t *testing.T, fs []effect, recs []record, skip ...string) {
	t.Helper()
	skipped := map[string]bool{}
	for _, s := range skip {
		skipped[s] = true
	}
	wantByKey := map[string][]string{}
	keyOf := map[string]string{}
	for _, r := range recs {
		keyOf[r.id] = r.key
		if !skipped[r.id] {
			wantByKey[r.key] = append(wantByKey[r.key], r.value)
		}
	}
	gotByKey := map[string][]string{}
	for _, f := range fs {
		gotByKey[keyOf[f.id]] = append(gotByKey[keyOf[f.id]], f.value)
	}
	for k, want := range wantByKey {
		if fmt.Sprint(gotByKey[k]) != fmt.Sprint(want) {
			t.Errorf("aggregate %s applied in order %v, want %v", k, gotByKey[k], want)
		}
	}
}
