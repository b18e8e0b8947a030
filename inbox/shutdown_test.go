package inbox_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/inbox"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
)

// gate holds the handler of one event until the test opens it.
type gate struct {
	id      string
	entered chan struct{}
	open    chan struct{}
	once    sync.Once
}

func newGate(id string) *gate {
	return &gate{id: id, entered: make(chan struct{}), open: make(chan struct{})}
}

func (g *gate) handler(next inbox.Handler) inbox.Handler {
	return func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		if msg.ID == g.id {
			g.once.Do(func() { close(g.entered) })
			select {
			case <-g.open:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return next(ctx, tx, msg)
	}
}

// A graceful shutdown lets the record in flight commit, commits the
// offsets of everything applied, and so a restarted consumer neither
// loses a record nor receives one it already applied.
func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const topic = "orders"
	e := newEnv(t, topic)
	recs := events(topic, "ev", 30, 3)
	e.produce(ctx, recs...)

	g := newGate("ev-12")
	r := e.start(e.config("g1", g.handler(recordEffect), topic))
	select {
	case <-g.entered:
	case <-ctx.Done():
		t.Fatal("the gated record never reached its handler")
	}
	r.stop()
	time.AfterFunc(300*time.Millisecond, func() { close(g.open) })
	if err := r.shutdown(t, 20*time.Second); err != nil {
		t.Fatalf("Run after a graceful shutdown: %v", err)
	}
	first := e.effects(ctx)
	if countByID(first)["ev-12"] != 1 {
		t.Fatalf("the record in flight at shutdown was not committed: %v", countByID(first))
	}
	if got := r.metric("outbox_relay_inbox_processed_total"); got != float64(len(first)) {
		t.Fatalf("processed_total %v, effects %d", got, len(first))
	}

	r2 := e.start(e.config("g1", recordEffect, topic))
	fs := e.waitEffects(ctx, len(recs))
	if err := r2.shutdown(t, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := r2.metric("outbox_relay_inbox_skipped_duplicates_total"); got != 0 {
		t.Errorf("the restarted consumer received %v records already applied: offsets were not committed at shutdown", got)
	}
	fs = e.effects(ctx)
	checkAppliedOnceInOrder(t, fs, recs)
}

// A handler still running at ShutdownTimeout is cancelled and rolled
// back, Run returns, and the record is applied once after a restart.
func TestShutdownTimeoutRollsBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const topic = "orders"
	e := newEnv(t, topic)
	recs := events(topic, "ev", 6, 1)
	e.produce(ctx, recs...)

	g := newGate("ev-3") // never opened
	cfg := e.config("g1", g.handler(recordEffect), topic)
	cfg.ShutdownTimeout = 500 * time.Millisecond
	r := e.start(cfg)
	<-g.entered
	start := time.Now()
	r.stop()
	if err := r.shutdown(t, 20*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(start); d < cfg.ShutdownTimeout {
		t.Errorf("Run returned after %s, before the %s shutdown timeout", d, cfg.ShutdownTimeout)
	}
	if n := len(e.effects(ctx)); n != 3 {
		t.Fatalf("%d effects after the timeout, want the 3 before the stuck record", n)
	}
	e.start(e.config("g1", recordEffect, topic))
	e.waitEffects(ctx, len(recs))
	if !eventually.True(ctx, 50*time.Millisecond, func() bool { return len(e.effects(ctx)) == len(recs) }) {
		t.Fatal("never settled")
	}
	fs := e.effects(ctx)
	checkAppliedOnce(t, fs)
	checkOrder(t, fs, recs)
}
