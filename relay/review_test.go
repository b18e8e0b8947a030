package relay_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

// Pins a publication change that the final status update's check finds
// being dropped: the Record hook refuses the position (good), but the
// session's error is dropped because ctx had ended (relay.Run returns nil
// on ctx end, and logs nothing), and the next process's first reading has
// nothing to compare with. The rows inserted while the outbox was out of
// the publication are then confirmed past, with no trace in the logs.
func TestPublicationChangeFoundAtShutdownIsNotForgotten(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{})
	cfg := env.Config()
	cfg.Replication.StatusInterval = 30 * time.Second // only the final status update checks
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	env.Insert(ctx, mutOrders(0, 1))
	waitCount(ctx, t, env, relaytest.Topics("order"), 1, "the change")
	execEach(ctx, t, env, `ALTER PUBLICATION outbox_relay DROP TABLE outbox`)
	lostAt := env.CurrentLSN(ctx)
	execEach(ctx, t, env, fmt.Sprintf(insertRow, "lost"), `ALTER PUBLICATION outbox_relay ADD TABLE outbox`)
	stopErr := run.Stop()
	for range 20 {
		execEach(ctx, t, env, `SELECT pg_logical_emit_message(false, 'test', 'wal')`)
	}
	past := env.CurrentLSN(ctx)

	cfg.Replication.StatusInterval = 100 * time.Millisecond
	run = relaytest.Start(t, cfg)
	if !eventually.True(ctx, 20*time.Millisecond, func() bool {
		select {
		case <-run.Done():
			return true
		default:
		}
		return env.Confirmed(ctx, env.Slot) >= past
	}) {
		t.Fatal("relay neither halted nor confirmed")
	}
	select {
	case <-run.Done():
	default:
		t.Fatalf("the first process stopped with %v; the second confirmed %s, past %s where the outbox left the publication: "+
			"the row inserted meanwhile is in Kafka: %v",
			stopErr, env.Confirmed(ctx, env.Slot), lostAt, delivered(ctx, t, env, "lost"))
	}
}

// delivered reports whether the outbox row whose aggregate id is aggID
// reached Kafka.
func delivered(ctx context.Context, t *testing.T, env *relaytest.Env, aggID string) bool {
	t.Helper()
	var id string
	if err := env.Pool.QueryRow(ctx, "SELECT id::text FROM outbox WHERE aggregate_id = $1", aggID).Scan(&id); err != nil {
		t.Fatal(err)
	}
	for _, r := range readEverything(ctx, t, env, relaytest.Topics("order")) {
		if string(r.Key) == id {
			return true
		}
	}
	return false
}
