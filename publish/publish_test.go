package publish_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/publish"
	"github.com/outbox-relay/outbox-relay/route"
)

// A row written with Table.Insert and a message written with Message, in
// the application's transaction, reach Kafka through the relay as the
// events they describe, with the returned ids in the id header; a
// rolled-back transaction's events never do.
func TestPublishedEventsReachKafka(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{})
	cfg := env.Config()
	cfg.Replication.MessagePrefix = "app"
	relaytest.Start(t, cfg).WaitReady(ctx, t)

	ev := func(id string) publish.Event {
		return publish.Event{AggregateType: "order", AggregateID: "42", EventType: "OrderPaid",
			Payload: json.RawMessage(`{"amount": 7}`), Headers: map[string]string{"traceparent": "00-tp"}, ID: id}
	}
	var rowID, msgID string
	err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
		var err error
		if rowID, err = (publish.Table{}).Insert(ctx, tx, ev("")); err != nil {
			return err
		}
		msgID, err = publish.Message(ctx, tx, "app", ev(""))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	errRollback := errors.New("roll back")
	err = pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
		if _, err := (publish.Table{}).Insert(ctx, tx, ev("a0a0a0a0-0000-4000-8000-000000000000")); err != nil {
			return err
		}
		if _, err := publish.Message(ctx, tx, "app", ev("rolled-back-message")); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	// A third event behind the rolled-back ones, so reading up to it shows
	// the rolled-back ones are not there.
	if err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
		_, err := publish.Message(ctx, tx, "app", ev("last"))
		return err
	}); err != nil {
		t.Fatal(err)
	}

	recs, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), []string{"outbox.event.order"}, 3)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]kafkatest.Record{}
	for _, r := range recs {
		got[r.Headers["id"]] = r
	}
	if len(recs) != 3 || len(got) != 3 {
		t.Fatalf("%d records (ids %v), want the row, the message and the last one", len(recs), keys(got))
	}
	for _, id := range []string{rowID, msgID, "last"} {
		r, ok := got[id]
		if !ok {
			t.Fatalf("no record with id %q; ids %v", id, keys(got))
		}
		var payload map[string]any
		if err := json.Unmarshal(r.Value, &payload); err != nil || payload["amount"] != 7.0 {
			t.Errorf("record %s: value %s, want the payload", id, r.Value)
		}
		if string(r.Key) != id || r.Headers["traceparent"] != "00-tp" {
			t.Errorf("record %s: key %q, headers %v", id, r.Key, r.Headers)
		}
	}
	if len(rowID) != 36 || len(msgID) != 36 || rowID == msgID {
		t.Errorf("ids %q and %q, want two UUIDs", rowID, msgID)
	}
}

func keys(m map[string]kafkatest.Record) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Renamed columns (route.Columns, as the relay's --*-column flags name
// them) are written under their names; bad input names the field.
func TestInsertColumnMappingAndErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	env := relaytest.NewEnvWith(t, pg, kafkatest.Options{}, `CREATE SCHEMA app; CREATE TABLE app."Events" (
		event_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregatetype text NOT NULL, aggregateid text NOT NULL,
		type text NOT NULL, payload text NOT NULL)`)
	tbl := publish.Table{Name: "app.Events", Columns: route.Columns{ID: "event_id", AggregateType: "aggregatetype",
		AggregateID: "aggregateid", EventType: "type", Payload: "payload"}}
	ok := publish.Event{AggregateType: "order", AggregateID: "7", EventType: "Paid", Payload: json.RawMessage(`{"a":1}`)}
	var id string
	err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
		var err error
		id, err = tbl.Insert(ctx, tx, ok)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var typ, payload string
	if err := env.Pool.QueryRow(ctx, `SELECT type, payload FROM app."Events" WHERE event_id = $1`, id).Scan(&typ, &payload); err != nil ||
		typ != "Paid" || payload != `{"a":1}` {
		t.Fatalf("row %s: type %q payload %q (%v)", id, typ, payload, err)
	}

	withHeaders := ok
	withHeaders.Headers = map[string]string{"a": "b"}
	badJSON := ok
	badJSON.Payload = json.RawMessage(`{`)
	noType := ok
	noType.EventType = ""
	for _, tc := range []struct {
		name string
		call func(tx pgx.Tx) error
		want string
	}{
		{"headers without a column", func(tx pgx.Tx) error { _, err := tbl.Insert(ctx, tx, withHeaders); return err },
			"Event.Headers are set but Table.Columns.Headers is empty"},
		{"payload not JSON", func(tx pgx.Tx) error { _, err := tbl.Insert(ctx, tx, badJSON); return err }, "payload is not valid JSON"},
		{"no event type", func(tx pgx.Tx) error { _, err := publish.Message(ctx, tx, "app", noType); return err }, "Event.EventType is empty"},
		{"no prefix", func(tx pgx.Tx) error { _, err := publish.Message(ctx, tx, "", ok); return err }, "prefix is empty"},
		{"bad table", func(tx pgx.Tx) error { _, err := (publish.Table{Name: "a..b"}).Insert(ctx, tx, ok); return err }, `Table.Name is "a..b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := env.Pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			if err := tc.call(tx); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
