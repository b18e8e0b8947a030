package debeziumtest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/route"
)

// Two outboxes in one process, one of the default shape and one of
// Debezium's in another schema with its own routing and envelope, written
// interleaved in the same transactions: every event of both arrives,
// routed by its own outbox's configuration, in commit order across both
// tables, through one slot whose position ends past the last commit.
func TestTwoOutboxesOneSlot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnvWith(t, pg, kafkatest.Options{Partitions: 1},
		relaytest.OutboxSQL(t)+"CREATE SCHEMA billing;"+debeziumTableIn("billing"))
	cfg := env.Config()
	cfg.Replication.Route.Topic, cfg.Replication.Route.KeyColumn = "shop.events", "aggregate_id"
	rt, err := route.Preset("debezium")
	if err != nil {
		t.Fatal(err)
	}
	rt.Topic, rt.Envelope = "shop.events", route.EnvelopeJSON
	cfg.Replication.Outboxes = []replication.Outbox{{Table: "billing.outbox", Route: rt}}
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)

	var want []string
	for txn := range 3 {
		err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
			for step := range 4 {
				seq := txn*4 + step
				q := fmt.Sprintf(`INSERT INTO public.outbox (aggregate_type, aggregate_id, event_type, payload)
					VALUES ('order', '42', 'Ordered', '{"seq": %d}') RETURNING id::text`, seq)
				if step%2 == 1 {
					q = fmt.Sprintf(`INSERT INTO billing.outbox (aggregatetype, aggregateid, type, payload)
						VALUES ('payment', '42', 'Charged', '{"seq": %d}') RETURNING id::text`, seq)
				}
				var id string
				if err := tx.QueryRow(ctx, q).Scan(&id); err != nil {
					return err
				}
				want = append(want, id)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	end := env.CurrentLSN(ctx)

	recs, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), []string{"shop.events"}, len(want))
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(byKey(t, recs)["42"]); !slices.Equal(got, want) {
		t.Errorf("ids in offset order %v, want commit order %v", got, want)
	}
	for i, r := range recs {
		var doc struct {
			Type    string          `json:"type"`
			Version int             `json:"version"`
			Payload json.RawMessage `json:"payload"`
		}
		billing := i%2 == 1
		if billing && (json.Unmarshal(r.Value, &doc) != nil || doc.Type != "Charged" || doc.Version != 1 || string(doc.Payload) != fmt.Sprintf(`{"seq":%d}`, i)) {
			t.Errorf("billing record %d: value %q, want the JSON envelope of seq %d", i, r.Value, i)
		}
		if !billing && string(r.Value) != fmt.Sprintf(`{"seq": %d}`, i) {
			t.Errorf("outbox record %d: value %q, want the payload of seq %d", i, r.Value, i)
		}
	}
	var slots int
	if err := env.Pool.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()").Scan(&slots); err != nil || slots != 1 {
		t.Errorf("%d slots (%v), want one", slots, err)
	}
	env.WaitConfirmed(ctx, env.Slot, end)
}

// debeziumTableIn is debeziumTable in another schema.
func debeziumTableIn(schema string) string {
	return "CREATE TABLE " + schema + `.outbox (
	id            uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
	aggregatetype varchar(255) NOT NULL,
	aggregateid   varchar(255) NOT NULL,
	type          varchar(255) NOT NULL,
	payload       jsonb
);`
}
