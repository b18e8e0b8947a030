package relaytest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/sink"
)

// NewEnvNoBroker is NewEnv for a test that brings its own Kafka cluster
// (internal/kafkafault runs three-node Apache Kafka clusters, listeners
// with SASL and TLS): a fresh database with the outbox table
// (testdata/outbox.sql) on pg, and no broker. Env.Kafka is nil, so the
// helpers that read it do not apply: build the relay's configuration
// with ConfigFor, not Config, and read the cluster yourself, not with
// faulttest.Verify. Insert, Confirmed, WaitConfirmed and faulttest's
// load, CatchUp and CheckAcknowledged work as with NewEnv.
func NewEnvNoBroker(t testing.TB, pg *pgtest.Server) *Env {
	t.Helper()
	return newDatabase(t, pg, OutboxSQL(t))
}

// newDatabase creates a fresh database on pg, runs schemaSQL in it and
// drops its slots at the end of the test.
func newDatabase(t testing.TB, pg *pgtest.Server, schemaSQL string) *Env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	url, err := pg.CreateDatabase(ctx, name)
	if err != nil {
		t.Fatalf("create database: %v", err)
	}
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, schemaSQL); err != nil {
		t.Fatalf("create outbox table: %v", err)
	}
	t.Cleanup(func() { dropSlots(pool) })
	return &Env{T: t, PG: pg, URL: url, Slot: "slot_" + name, Pool: pool}
}

// dropSlots drops the database's slots so the shared server does not
// retain WAL for them; a walsender may linger a moment after its relay
// stopped.
func dropSlots(pool *pgxpool.Pool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	eventually.True(ctx, 20*time.Millisecond, func() bool {
		var left int
		_ = pool.QueryRow(ctx, `WITH t AS (SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE database = current_database() AND active_pid IS NOT NULL),
			d AS (SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
			WHERE database = current_database() AND NOT active)
			SELECT (SELECT count(*) FROM t) + (SELECT count(*) FROM d)`).Scan(&left)
		return left == 0
	})
}

// ConfigFor is Config with brokers as the relay's Kafka: the same
// test-friendly timings, for an env whose Kafka is not Env.Kafka.
func (e *Env) ConfigFor(brokers []string) Config {
	rc := replication.DefaultConfig()
	rc.ConnString = e.URL
	rc.Slot = e.Slot
	rc.StatusInterval = 100 * time.Millisecond
	sc := sink.DefaultConfig()
	sc.Brokers = brokers
	sc.RetryBackoff = 20 * time.Millisecond
	sc.RetryBackoffMax = 200 * time.Millisecond
	sc.Timeout = 5 * time.Second
	lc := relay.DefaultConfig()
	lc.BackoffMin = 50 * time.Millisecond
	lc.BackoffMax = 500 * time.Millisecond
	lc.StandbyPoll = 200 * time.Millisecond
	lc.ShutdownTimeout = 10 * time.Second
	return Config{Replication: rc, Sink: sc, Relay: lc}
}
