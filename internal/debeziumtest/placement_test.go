package debeziumtest_test

import (
	"context"
	"encoding/json"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/route"
)

// placedTable is testdata/outbox.sql plus the columns the tests place.
func placedTable(t *testing.T) string {
	return relaytest.OutboxSQL(t) + `
ALTER TABLE public.outbox ADD COLUMN tenant text, ADD COLUMN trace text, ADD COLUMN occurred timestamptz,
	ADD COLUMN schema_uri text, ADD COLUMN schema_version int;`
}

// placedRow is one row of placedTable as inserted.
type placedRow struct {
	id, evType, aggID, payload string
	occurred                   *time.Time
}

func insertPlaced(ctx context.Context, t *testing.T, env *relaytest.Env, aggID string, tenant, trace *string, occurred *time.Time, schemaURI string) placedRow {
	t.Helper()
	r := placedRow{occurred: occurred}
	err := env.Pool.QueryRow(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, tenant, trace, occurred, schema_uri, schema_version)
		VALUES ('order', $1, 'OrderPaid', '{"amount": 1999, "order_id": 42}', $2, $3, $4, $5, 3)
		RETURNING id::text, event_type, aggregate_id, payload::text`, aggID, tenant, trace, occurred, schemaURI).Scan(&r.id, &r.evType, &r.aggID, &r.payload)
	if err != nil {
		t.Fatalf("insert: %v", err)
	}
	return r
}

func ptr[T any](v T) *T { return &v }

// startAndRead starts a relay with cfg, runs write and reads want records
// of outbox.event.order back.
func startAndRead(ctx context.Context, t *testing.T, env *relaytest.Env, cfg relaytest.Config, want int, write func()) []kafkatest.Record {
	t.Helper()
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	write()
	recs, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), []string{"outbox.event.order"}, want)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func recordByID(t *testing.T, recs []kafkatest.Record, id string) kafkatest.Record {
	t.Helper()
	for _, r := range recs {
		if r.Headers["id"] == id {
			return r
		}
	}
	t.Fatalf("no record with id %s", id)
	return kafkatest.Record{}
}

// --field places columns as headers under their aliases, a NULL one not
// at all; --timestamp-column sets the record timestamp, a NULL value
// leaving the commit time.
func TestFieldPlacementAndTimestampColumn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnvWith(t, pg, kafkatest.Options{Partitions: 2}, placedTable(t))
	cfg := env.Config()
	cfg.Replication.Route.Fields = []route.Field{{Column: "tenant", Place: route.PlaceHeader},
		{Column: "trace", Place: route.PlaceHeader, Alias: "traceparent"}}
	cfg.Replication.Route.TimestampColumn = "occurred"
	at := time.Date(2021, 3, 4, 5, 6, 7, 89_000_000, time.UTC)
	var rows []placedRow
	var before time.Time
	recs := startAndRead(ctx, t, env, cfg, 2, func() {
		rows = append(rows, insertPlaced(ctx, t, env, "42", ptr("acme"), ptr("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), &at, ""))
		before = time.Now().Add(-time.Second)
		rows = append(rows, insertPlaced(ctx, t, env, "43", nil, ptr("tp"), nil, ""))
	})
	r := recordByID(t, recs, rows[0].id)
	if r.Headers["tenant"] != "acme" || r.Headers["traceparent"] != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
		t.Errorf("headers %v, want tenant=acme and the trace column as traceparent", r.Headers)
	}
	if _, ok := r.Headers["trace"]; ok {
		t.Errorf("headers %v: the aliased column also under its own name", r.Headers)
	}
	if !r.Timestamp.Equal(at) {
		t.Errorf("timestamp %v, want the occurred column's %v", r.Timestamp.UTC(), at)
	}
	r = recordByID(t, recs, rows[1].id)
	if _, ok := r.Headers["tenant"]; ok || r.Headers["traceparent"] != "tp" {
		t.Errorf("headers %v, want no tenant (NULL) and traceparent=tp", r.Headers)
	}
	if r.Timestamp.Before(before) || r.Timestamp.After(time.Now()) {
		t.Errorf("timestamp %v for a NULL occurred, want the commit time (after %v)", r.Timestamp, before)
	}
}

// A placed column or timestamp column the table lacks stops the start,
// naming the column, before anything is streamed; so does a second outbox
// whose table is missing.
func TestPlacedColumnMissingFailsStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnvWith(t, pg, kafkatest.Options{}, placedTable(t))
	for _, tc := range []struct {
		set  func(*route.Config)
		want string
	}{
		{func(c *route.Config) { c.Fields = []route.Field{{Column: "region", Place: route.PlaceHeader}} }, `no column "region" (--field region:header)`},
		{func(c *route.Config) { c.TimestampColumn = "created" }, `no column "created" (--timestamp-column)`},
		{nil, `table "public"."payments_outbox" does not exist`},
	} {
		cfg := env.Config()
		if tc.set != nil {
			tc.set(&cfg.Replication.Route)
		} else {
			cfg.Replication.Outboxes = []replication.Outbox{{Table: "public.payments_outbox", Route: route.DefaultConfig()}}
		}
		run := relaytest.Start(t, cfg)
		select {
		case <-run.Done():
		case <-ctx.Done():
			t.Fatalf("the relay started without the column of %q", tc.want)
		}
		if err := run.Err(); !outboxrelay.IsConfigError(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("relay stopped with %v, want a ConfigError saying %s", err, tc.want)
		}
	}
}

// --envelope cloudevents: every required CloudEvents 1.0 attribute, and the
// optional ones the relay sets, present and valid per the spec and the
// Kafka protocol binding (binary mode: ce_ headers, the data as the value).
func TestEnvelopeCloudEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnvWith(t, pg, kafkatest.Options{Partitions: 2}, placedTable(t))
	cfg := env.Config()
	cfg.Replication.Route.Envelope = route.EnvelopeCloudEvents
	cfg.Replication.Route.Fields = []route.Field{{Column: "schema_uri", Place: route.PlaceEnvelope, Alias: "dataschema"},
		{Column: "tenant", Place: route.PlaceEnvelope}}
	var row placedRow
	recs := startAndRead(ctx, t, env, cfg, 1, func() {
		row = insertPlaced(ctx, t, env, "42", ptr("acme"), nil, nil, "https://schemas.example.com/order/v3")
	})
	r := recordByID(t, recs, row.id)
	h := r.Headers
	u, err := url.Parse(env.URL)
	if err != nil {
		t.Fatal(err)
	}
	db := strings.TrimPrefix(u.Path, "/")
	for _, c := range []struct{ attr, want string }{
		{"ce_specversion", "1.0"}, {"ce_id", row.id}, {"ce_source", "/" + db + "/public/outbox"}, {"ce_type", row.evType},
		{"ce_subject", row.aggID}, {"content-type", "application/json"},
		{"ce_dataschema", "https://schemas.example.com/order/v3"}, {"ce_tenant", "acme"},
	} {
		if h[c.attr] != c.want {
			t.Errorf("%s = %q, want %q", c.attr, h[c.attr], c.want)
		}
	}
	// Spec: id and type non-empty strings; source a non-empty URI-reference;
	// time RFC 3339; dataschema an absolute URI.
	if u, err := url.Parse(h["ce_source"]); err != nil || h["ce_source"] == "" || u.String() == "" {
		t.Errorf("ce_source %q is not a URI-reference: %v", h["ce_source"], err)
	}
	if u, err := url.Parse(h["ce_dataschema"]); err != nil || !u.IsAbs() {
		t.Errorf("ce_dataschema %q is not an absolute URI", h["ce_dataschema"])
	}
	var ceTime time.Time
	ceTime, err = time.Parse(time.RFC3339Nano, h["ce_time"])
	if err != nil || ceTime.Truncate(time.Millisecond).Sub(r.Timestamp).Abs() > time.Millisecond {
		t.Errorf("ce_time %q (%v): want RFC 3339 and the record timestamp %v", h["ce_time"], err, r.Timestamp)
	}
	if string(r.Value) != row.payload {
		t.Errorf("value %q, want the payload %q (binary mode)", r.Value, row.payload)
	}
}

// --envelope json: the documented document, placed envelope fields as
// members, the placed header still a header.
func TestEnvelopeJSON(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnvWith(t, pg, kafkatest.Options{Partitions: 2}, placedTable(t))
	cfg := env.Config()
	cfg.Replication.Route.Envelope = route.EnvelopeJSON
	cfg.Replication.Route.TimestampColumn = "occurred"
	cfg.Replication.Route.Fields = []route.Field{{Column: "tenant", Place: route.PlaceEnvelope},
		{Column: "schema_version", Place: route.PlaceEnvelope, Alias: "schema"}, {Column: "trace", Place: route.PlaceHeader}}
	at := time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC)
	var row placedRow
	recs := startAndRead(ctx, t, env, cfg, 1, func() {
		row = insertPlaced(ctx, t, env, "42", ptr("acme"), ptr("tp"), &at, "")
	})
	r := recordByID(t, recs, row.id)
	var got map[string]any
	if err := json.Unmarshal(r.Value, &got); err != nil {
		t.Fatalf("value %q is not JSON: %v", r.Value, err)
	}
	want := map[string]any{
		"id": row.id, "type": "OrderPaid", "aggregate_type": "order", "aggregate_id": "42",
		"occurred_at": "2025-03-01T12:00:00.123456Z", "version": float64(1),
		"payload": map[string]any{"amount": float64(1999), "order_id": float64(42)},
		"tenant":  "acme", "schema": float64(3),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("envelope\n%v\nwant\n%v", got, want)
	}
	if r.Headers["trace"] != "tp" || r.Headers["id"] != row.id {
		t.Errorf("headers %v, want id and trace=tp", r.Headers)
	}
}
