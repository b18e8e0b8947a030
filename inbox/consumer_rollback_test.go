package inbox_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/inbox"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
)

// A handler that ends the inbox's transaction itself (here: rolls it back
// and returns nil) gets its record dead-lettered once; a review found the
// partition retrying it forever as the inbox's own database failure.
func TestHandlerClosingTheTxIsDeadLettered(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	e := newEnv(t, "orders")
	e.produce(ctx, record{topic: "orders", id: "ev-1", key: "k", value: "v"})
	var calls atomic.Int64
	h := func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		calls.Add(1)
		return tx.Rollback(ctx)
	}
	cfg := e.config("g-rb", h, "orders")
	cfg.DeadLetterTopic = "orders.dlq"
	r := e.start(cfg)
	if !eventually.True(ctx, 20*time.Millisecond, func() bool { return r.metric("outbox_relay_inbox_dead_lettered_total") >= 1 }) {
		t.Fatalf("never dead-lettered; the handler ran %d times", calls.Load())
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the handler ran %d times, want 1", n)
	}
}
