package debeziumtest_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/route"
)

// debeziumTable is the outbox table Debezium's Outbox Event Router
// documents, with a nullable payload for tombstones.
const debeziumTable = `CREATE TABLE public.outbox (
	id            uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
	aggregatetype varchar(255) NOT NULL,
	aggregateid   varchar(255) NOT NULL,
	type          varchar(255) NOT NULL,
	payload       jsonb
);`

func debeziumInsert(aggType, aggID, evType string, seq int) string {
	return fmt.Sprintf(`INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
		VALUES ('%s', '%s', '%s', '{"seq": %d, "aggregate": "%s", "note": "événement"}')
		RETURNING id::text, aggregateid, payload::text`, aggType, aggID, evType, seq, aggID)
}

// A Debezium-shaped table streamed with --preset debezium and
// --tombstone-on-empty-payload: topic outbox.event.<aggregatetype>, key
// aggregateid, header id, the payload byte for byte, each aggregate's
// events in commit order, and a NULL payload as a tombstone keyed by its
// aggregate.
func TestPresetDebeziumDeliversAndTombstones(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnvWith(t, pg, kafkatest.Options{Partitions: 3}, debeziumTable)
	cfg := env.Config()
	rt, err := route.Preset("debezium")
	if err != nil {
		t.Fatal(err)
	}
	rt.TombstoneOnEmptyPayload = true
	cfg.Replication.Route = rt
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)

	aggs := []struct{ typ, id string }{{"Order", "o-1"}, {"Order", "o-2"}, {"Customer", "c-1"}}
	var rows []written
	for txn := range 4 {
		var stmts []string
		for step := range 3 {
			a := aggs[(txn+step)%len(aggs)]
			stmts = append(stmts, debeziumInsert(a.typ, a.id, "Changed", txn*3+step))
		}
		rows = append(rows, insertTx(ctx, t, env, stmts...)...)
	}
	rows = append(rows, insertTx(ctx, t, env, `INSERT INTO outbox (aggregatetype, aggregateid, type, payload)
		VALUES ('Order', 'o-1', 'Deleted', NULL) RETURNING id::text, aggregateid, payload::text`)...)

	recs, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), []string{"outbox.event.Order", "outbox.event.Customer"}, len(rows))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(rows) {
		t.Fatalf("%d records, want %d", len(recs), len(rows))
	}
	want := map[string]written{}
	wantOrder := map[string][]string{}
	for _, w := range rows {
		want[w.id] = w
		wantOrder[w.aggregate] = append(wantOrder[w.aggregate], w.id)
	}
	for _, r := range recs {
		w, ok := want[r.Headers["id"]]
		if !ok {
			t.Errorf("record %s[%d]@%d has id header %q, which no row has", r.Topic, r.Partition, r.Offset, r.Headers["id"])
			continue
		}
		wantTopic := "outbox.event.Order"
		if w.aggregate == "c-1" {
			wantTopic = "outbox.event.Customer"
		}
		if r.Topic != wantTopic || string(r.Key) != w.aggregate {
			t.Errorf("event %s: topic %q key %q, want %q %q", w.id, r.Topic, r.Key, wantTopic, w.aggregate)
		}
		switch {
		case w.payload == nil && r.Value != nil:
			t.Errorf("event %s has a NULL payload: value %q, want a tombstone (null value)", w.id, r.Value)
		case w.payload != nil && string(r.Value) != *w.payload:
			t.Errorf("event %s: value %q, want the payload %q byte for byte", w.id, r.Value, *w.payload)
		}
	}
	for key, rs := range byKey(t, recs) {
		if got := ids(rs); !slices.Equal(got, wantOrder[key]) {
			t.Errorf("aggregate %s: ids in offset order %v, want commit order %v", key, got, wantOrder[key])
		}
	}
}
