package admin

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
	"github.com/outbox-relay/outbox-relay/replication"
)

// With --message-prefix, the slot tools see the message events too: peek
// lists them, slot skip finds one by id, and advance counts them. A review
// found them blind (a halt at a bad message advised a slot skip that said
// "not pending", and advance reported 0 skipped). Each message is in a
// transaction that also writes a row, as an application's would.
func TestPeekSeesMessageEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	srv, err := pgtest.Start(ctx, pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	conn, err := pgx.Connect(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		"CREATE PUBLICATION outbox_relay WITH (publish = 'insert')",
		"SELECT pg_create_logical_replication_slot('outbox_relay', 'pgoutput')",
		`CREATE TABLE t (x int)`,
		`BEGIN; INSERT INTO t VALUES (1); SELECT pg_logical_emit_message(true, 'outbox', '{"id":"m1","aggregate_type":"order","aggregate_id":"42","event_type":"Paid","payload":1}'); COMMIT`,
		`BEGIN; INSERT INTO t VALUES (2); SELECT pg_logical_emit_message(true, 'outbox', '{"id":"poison","aggregate_type":"order","aggregate_id":"42","payload":1}'); COMMIT`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var end outboxrelay.LSN
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()").Scan(&end); err != nil {
		t.Fatal(err)
	}
	// The test cluster commits asynchronously, and decoding reads only
	// flushed WAL.
	if !eventually.True(ctx, 10*time.Millisecond, func() bool {
		var flushed bool
		return conn.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn() >= $1", end).Scan(&flushed) == nil && flushed
	}) {
		t.Fatal("the WAL was never flushed")
	}
	cfg := replication.DefaultConfig()
	cfg.ConnString, cfg.Table, cfg.MessagePrefix = srv.URL(), "", "outbox"
	evs, err := Peek(ctx, conn, cfg, 0)
	if err != nil || len(evs) != 2 {
		t.Errorf("Peek: %d events (%v), want the 2 messages", len(evs), err)
	}
	if _, found, err := FindPending(ctx, conn, cfg, "poison"); err != nil || !found {
		t.Errorf("FindPending(poison): found %v, %v; want it found", found, err)
	}
	if upTo, err := PeekUpTo(ctx, conn, cfg, end); err != nil || len(upTo) != 2 {
		t.Errorf("PeekUpTo(%s): %d events (%v), want 2", end, len(upTo), err)
	}
}
