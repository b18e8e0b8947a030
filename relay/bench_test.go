package relay_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/checkpoint"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/sink"
)

// BenchmarkEventHotPath is the relay's work per outbox row, the part that
// scales with the event rate: decode a real pgoutput insert frame, track
// it, build the Kafka record as Sink.Produce does, and mark it acked. The
// network, sarama's batching and Postgres are measured by `make bench`
// (docs/benchmarks.md); this isolates allocations on the relay's own path.
//
//	go test -run '^$' -bench EventHotPath -benchmem ./relay/
func BenchmarkEventHotPath(b *testing.B) {
	relation, insert, lsn := captureInsert(b)
	cfg := replication.DefaultConfig()
	cfg.ConnString = "postgres://bench"
	dec, err := replication.NewDecoder(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := dec.Decode(lsn, relation); err != nil {
		b.Fatal(err)
	}
	// The ring the size it has in a running relay.
	def := relay.DefaultConfig()
	tracker, err := checkpoint.New(def.MaxInFlight, def.MaxInFlightBytes)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.SetBytes(int64(len(insert)))
	b.ReportAllocs()
	for b.Loop() {
		msg, ok, err := dec.Decode(lsn, insert)
		if err != nil || !ok || msg.Err != nil {
			b.Fatalf("decode insert: ok=%v err=%v event err=%v", ok, err, msg.Err)
		}
		tok, err := tracker.Track(ctx, len(msg.Event.Key)+len(msg.Event.Value))
		if err != nil {
			b.Fatal(err)
		}
		rec := sink.NewRecord(&msg.Event, uint64(tok))
		if rec.Topic != "outbox.event.order" {
			b.Fatalf("topic %q", rec.Topic)
		}
		tracker.Done(tok)
	}
}

// captureInsert writes one outbox row with a ~500-byte payload, the size
// `make bench` uses, and reads its Relation and Insert messages back from a
// pgoutput slot, exactly as the stream receives them.
func captureInsert(b *testing.B) (relation, insert []byte, lsn outboxrelay.LSN) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := relaytest.NewEnv(b, pg, kafkatest.Options{})
	conn, err := pgx.Connect(ctx, env.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range []string{
		// The SQL interface decodes only flushed WAL; pgtest commits async.
		"SET synchronous_commit = on",
		"CREATE PUBLICATION bench FOR TABLE outbox WITH (publish = 'insert')",
		"SELECT pg_create_logical_replication_slot('bench', 'pgoutput')",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := conn.Exec(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
		VALUES ('order', 'order-42', 'order.created', jsonb_build_object('seq', 42, 'pad', $1::text))`,
		strings.Repeat("0123456789abcdef", 29)); err != nil {
		b.Fatal(err)
	}
	rows, err := conn.Query(ctx, `SELECT lsn::text, data FROM pg_logical_slot_get_binary_changes('bench', NULL, NULL,
		'proto_version', '1', 'publication_names', 'bench')`)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var at string
		var data []byte
		if err := rows.Scan(&at, &data); err != nil {
			b.Fatal(err)
		}
		switch data[0] {
		case 'R':
			relation = data
		case 'I':
			insert = data
			if lsn, err = pglogrepl.ParseLSN(at); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	if relation == nil || insert == nil {
		b.Fatal("the slot returned no Relation or Insert message")
	}
	if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot('bench')"); err != nil {
		b.Fatal(err)
	}
	return relation, insert, lsn
}
