package route

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// debeziumColumns is Debezium's documented outbox table plus the columns
// the placement tests place.
var debeziumColumns = []Column{
	{Name: "id", TypeOID: 2950}, {Name: "aggregatetype", TypeOID: 1043}, {Name: "aggregateid", TypeOID: 1043},
	{Name: "type", TypeOID: 1043}, {Name: "payload", TypeOID: oidJSONB}, {Name: "tenant", TypeOID: 25},
	{Name: "trace", TypeOID: 25}, {Name: "schema_version", TypeOID: oidInt4}, {Name: "occurred", TypeOID: oidTimestampTZ},
}

// debeziumRow is a row of debeziumColumns; a nil payload is NULL.
func debeziumRow(id string, payload *string) []Value {
	return row(s(id), s("Order"), s("o-42"), s("OrderPaid"), payload, s("acme"), s("tp-1"), s("3"), s("2024-05-06 07:08:09.123456+02"))
}

func presetConfig(t *testing.T, f func(*Config)) Config {
	t.Helper()
	cfg, err := Preset("debezium")
	if err != nil {
		t.Fatal(err)
	}
	if f != nil {
		f(&cfg)
	}
	return cfg
}

func headerMap(ev outboxrelay.Event) map[string]string {
	m := map[string]string{}
	for _, h := range ev.Headers {
		m[h.Key] = string(h.Value)
	}
	return m
}

func TestPresetDebezium(t *testing.T) {
	cols := debeziumColumns[:5] // the table Debezium documents, no timestamp column
	ev, err := bind(t, presetConfig(t, nil), cols).Event(debeziumRow("e1", s(`{"total": 10}`))[:5], meta)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Topic != "outbox.event.Order" || string(ev.Key) != "o-42" || string(ev.PartitionKey) != "o-42" || string(ev.Value) != `{"total": 10}` {
		t.Errorf("topic %q key %q partition key %q value %q", ev.Topic, ev.Key, ev.PartitionKey, ev.Value)
	}
	if h := headerMap(ev); h["id"] != "e1" {
		t.Errorf("headers %v, want id = e1", h)
	}
	if !ev.Timestamp.IsZero() {
		t.Errorf("timestamp %v without a timestamp column, want zero (the commit time)", ev.Timestamp)
	}
	// Debezium's optional timestamp column is used when the table has it.
	ts := append(cols[:5:5], Column{Name: "timestamp", TypeOID: oidTimestampTZ})
	ev, err = bind(t, presetConfig(t, nil), ts).Event(append(debeziumRow("e2", s(`{}`))[:5:5], Value{Kind: Text, Data: []byte("2024-01-02 03:04:05+00")}), meta)
	if err != nil || !ev.Timestamp.Equal(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("timestamp %v, %v; want the timestamp column's", ev.Timestamp, err)
	}
	for _, name := range []string{"", "Debezium", "maxwell"} {
		if _, err := Preset(name); err == nil || !strings.Contains(err.Error(), "use one of debezium") {
			t.Errorf("Preset(%q) = %v, want an error listing the presets", name, err)
		}
	}
}

func TestTombstoneOnEmptyPayload(t *testing.T) {
	cfg := presetConfig(t, func(c *Config) { c.TombstoneOnEmptyPayload = true })
	for _, env := range []Envelope{EnvelopeNone, EnvelopeJSON, EnvelopeCloudEvents} {
		cfg.Envelope = env
		ev, err := bind(t, cfg, debeziumColumns).Event(debeziumRow("e1", nil), meta)
		if err != nil {
			t.Fatalf("%s: %v", env, err)
		}
		if ev.Value != nil || string(ev.Key) != "o-42" || headerMap(ev)["id"] != "e1" {
			t.Errorf("%s: value %q key %q headers %v; want a tombstone keyed o-42 with id e1", env, ev.Value, ev.Key, headerMap(ev))
		}
	}
	// Without the option a NULL payload stays undeliverable.
	_, err := bind(t, presetConfig(t, nil), debeziumColumns).Event(debeziumRow("e1", nil), meta)
	var ue *UnmappableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "NULL payload") {
		t.Errorf("NULL payload without the option: %v, want an UnmappableError", err)
	}
}

func TestFieldPlacement(t *testing.T) {
	cfg := presetConfig(t, func(c *Config) {
		c.Fields = []Field{{Column: "tenant", Place: PlaceHeader}, {Column: "trace", Place: PlaceHeader, Alias: "traceparent"}}
		c.TimestampColumn = "occurred"
	})
	vals := debeziumRow("e1", s(`{}`))
	vals[6] = Value{} // a NULL placed column leaves its header out
	ev, err := bind(t, cfg, debeziumColumns).Event(vals, meta)
	if err != nil {
		t.Fatal(err)
	}
	h := headerMap(ev)
	if h["tenant"] != "acme" || len(ev.Headers) != 5 {
		t.Errorf("headers %v, want id, type, aggregate headers and tenant=acme only", h)
	}
	if want := time.Date(2024, 5, 6, 5, 8, 9, 123456000, time.UTC); !ev.Timestamp.Equal(want) {
		t.Errorf("timestamp %v, want %v", ev.Timestamp, want)
	}
	ev, err = bind(t, cfg, debeziumColumns).Event(debeziumRow("e2", s(`{}`)), meta)
	if err != nil || headerMap(ev)["traceparent"] != "tp-1" {
		t.Errorf("headers %v, %v; want traceparent=tp-1 (the trace column's alias)", headerMap(ev), err)
	}
	// A row's headers column cannot pose as a placed header.
	cfg.Columns.Headers = "hdrs"
	cols := append(debeziumColumns[:len(debeziumColumns):len(debeziumColumns)], Column{Name: "hdrs", TypeOID: oidJSONB})
	ev, err = bind(t, cfg, cols).Event(append(debeziumRow("e3", s(`{}`)), Value{Kind: Text, Data: []byte(`{"tenant": "forged", "x": "y"}`)}), meta)
	if h := headerMap(ev); err != nil || h["tenant"] != "acme" || h["x"] != "y" {
		t.Errorf("headers %v, %v; want tenant=acme (not the headers column's) and x=y", h, err)
	}
}

func TestTimestampColumn(t *testing.T) {
	for _, tc := range []struct {
		oid  uint32
		text string
		want time.Time
		err  string
	}{
		{oidTimestampTZ, "2024-05-06 07:08:09+00", time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC), ""},
		{oidTimestampTZ, "2024-05-06 07:08:09.5+05:30", time.Date(2024, 5, 6, 1, 38, 9, 500000000, time.UTC), ""},
		{oidTimestamp, "2024-05-06 07:08:09.000001", time.Date(2024, 5, 6, 7, 8, 9, 1000, time.UTC), ""},
		{oidInt8, "1714979289000", time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC), ""},
		{oidTimestampTZ, "infinity", time.Time{}, `timestamp column "occurred": timestamp "infinity" is not a Postgres ISO timestamp`},
		{oidInt8, "12x", time.Time{}, "is not epoch milliseconds"},
	} {
		cols := append(debeziumColumns[:8:8], Column{Name: "occurred", TypeOID: tc.oid})
		vals := debeziumRow("e1", s(`{}`))
		vals[8] = Value{Kind: Text, Data: []byte(tc.text)}
		ev, err := bind(t, presetConfig(t, func(c *Config) { c.TimestampColumn = "occurred" }), cols).Event(vals, meta)
		if tc.err != "" {
			var ue *UnmappableError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want an UnmappableError saying %q", tc.text, err, tc.err)
			}
			continue
		}
		if err != nil || !ev.Timestamp.Equal(tc.want) {
			t.Errorf("%q (oid %d): %v, %v; want %v", tc.text, tc.oid, ev.Timestamp, err, tc.want)
		}
	}
	// NULL falls back to the commit time.
	vals := debeziumRow("e1", s(`{}`))
	vals[8] = Value{}
	ev, err := bind(t, presetConfig(t, func(c *Config) { c.TimestampColumn = "occurred" }), debeziumColumns).Event(vals, meta)
	if err != nil || !ev.Timestamp.IsZero() {
		t.Errorf("NULL timestamp: %v, %v; want zero (the commit time)", ev.Timestamp, err)
	}
}

func TestPlacedColumnMissing(t *testing.T) {
	for _, tc := range []struct {
		cfg  func(*Config)
		want string
	}{
		{func(c *Config) { c.Fields = []Field{{Column: "region", Place: PlaceHeader}} }, `no column(s) ["region"]`},
		{func(c *Config) { c.TimestampColumn, c.TimestampOptional = "created", false }, `no column(s) ["created"]`},
	} {
		m, err := New(presetConfig(t, tc.cfg))
		if err != nil {
			t.Fatal(err)
		}
		_, err = m.Bind(`"public"."outbox"`, debeziumColumns)
		if !outboxrelay.IsConfigError(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Bind = %v, want a ConfigError naming %s", err, tc.want)
		}
	}
}

func TestEnvelopeCloudEvents(t *testing.T) {
	cfg := presetConfig(t, func(c *Config) {
		c.Envelope, c.Source, c.TimestampColumn = EnvelopeCloudEvents, "/app/public/outbox", "occurred"
		c.Fields = []Field{{Column: "schema_version", Place: PlaceEnvelope, Alias: CloudEventsDataSchema},
			{Column: "tenant", Place: PlaceEnvelope, Alias: "tenantid"}}
	})
	cols := append([]Column(nil), debeziumColumns...)
	cols[7].TypeOID = 25
	vals := debeziumRow("e1", s(`{"total": 10}`))
	vals[7] = Value{Kind: Text, Data: []byte("https://schemas.example.com/order/v3")}
	ev, err := bind(t, cfg, cols).Event(vals, meta)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"id": "e1", "ce_specversion": "1.0", "ce_id": "e1", "ce_source": "/app/public/outbox", "ce_type": "OrderPaid",
		"ce_time": "2024-05-06T05:08:09.123456Z", "ce_subject": "o-42", "content-type": "application/json",
		"ce_dataschema": "https://schemas.example.com/order/v3", "ce_tenantid": "acme",
	}
	h := headerMap(ev)
	for k, v := range want {
		if h[k] != v {
			t.Errorf("header %s = %q, want %q", k, h[k], v)
		}
	}
	if string(ev.Value) != `{"total": 10}` {
		t.Errorf("value %q, want the payload (binary mode)", ev.Value)
	}
	vals[3] = Value{}
	if _, err := bind(t, cfg, cols).Event(vals, meta); err == nil || !strings.Contains(err.Error(), "CloudEvents requires a type") {
		t.Errorf("NULL event type: %v, want an UnmappableError", err)
	}
	// A bare version is no dataschema: CloudEvents wants an absolute URI.
	if _, err := bind(t, cfg, debeziumColumns).Event(debeziumRow("e3", s(`{}`)), meta); err == nil || !strings.Contains(err.Error(), `ce_dataschema "3" (column "schema_version") is not an absolute URI`) {
		t.Errorf("dataschema 3: %v, want an UnmappableError", err)
	}
}

func TestEnvelopeJSON(t *testing.T) {
	cfg := presetConfig(t, func(c *Config) {
		c.Envelope = EnvelopeJSON
		c.Fields = []Field{{Column: "schema_version", Place: PlaceEnvelope, Alias: "schema"}, {Column: "tenant", Place: PlaceEnvelope},
			{Column: "trace", Place: PlaceHeader, Alias: "traceparent"}}
	})
	ev, err := bind(t, cfg, debeziumColumns).Event(debeziumRow("e1", s(`{"total": 10}`)), meta)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"aggregate_id":"o-42","aggregate_type":"Order","id":"e1","occurred_at":"2025-01-01T00:00:00Z","payload":{"total":10},"schema":3,"tenant":"acme","type":"OrderPaid","version":1}`
	if string(ev.Value) != want {
		t.Errorf("value\n%s\nwant\n%s", ev.Value, want)
	}
	if headerMap(ev)["traceparent"] != "tp-1" {
		t.Errorf("headers %v, want the placed traceparent too", headerMap(ev))
	}
	// Text and bytea payloads are a string and base64.
	for _, tc := range []struct {
		oid        uint32
		text, want string
	}{{25, "plain", `"plain"`}, {oidBytea, `\x00ff`, `"AP8="`}} {
		cols := append([]Column(nil), debeziumColumns...)
		cols[4].TypeOID = tc.oid
		ev, err := bind(t, cfg, cols).Event(debeziumRow("e2", s(tc.text)), meta)
		var doc map[string]json.RawMessage
		if err != nil || json.Unmarshal(ev.Value, &doc) != nil || string(doc["payload"]) != tc.want {
			t.Errorf("payload of oid %d: %s, %v; want %s", tc.oid, doc["payload"], err, tc.want)
		}
	}
}

func TestValidateDebeziumOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*Config)
		want string
	}{
		{"envelope", func(c *Config) { c.Envelope = "avro" }, `route.Config.Envelope: "avro": use none, cloudevents or json`},
		{"envelope field without envelope", func(c *Config) { c.Fields = []Field{{Column: "tenant", Place: PlaceEnvelope}} },
			`route.Config.Fields: "tenant:envelope": envelope placement needs an envelope`},
		{"reserved header", func(c *Config) { c.Fields = []Field{{Column: "tenant", Place: PlaceHeader, Alias: "id"}} },
			`"tenant:header:id": header "id" is set by the relay`},
		{"twice", func(c *Config) {
			c.Fields = []Field{{Column: "a", Place: PlaceHeader, Alias: "x"}, {Column: "x", Place: PlaceHeader}}
		}, `header "x" is placed twice`},
		{"json member", func(c *Config) {
			c.Envelope, c.Fields = EnvelopeJSON, []Field{{Column: "v", Place: PlaceEnvelope, Alias: "version"}}
		}, `"version" is a member of the JSON envelope itself`},
		{"ce core", func(c *Config) {
			c.Envelope, c.Fields = EnvelopeCloudEvents, []Field{{Column: "t", Place: PlaceEnvelope, Alias: "time"}}
		}, `"time" is a CloudEvents attribute the relay sets`},
		{"ce name", func(c *Config) {
			c.Envelope, c.Fields = EnvelopeCloudEvents, []Field{{Column: "tenant_id", Place: PlaceEnvelope}}
		}, `"tenant_id" is not a CloudEvents attribute name`},
		{"ce header", func(c *Config) {
			c.Envelope, c.Fields = EnvelopeCloudEvents, []Field{{Column: "x", Place: PlaceHeader, Alias: "ce_type"}}
		}, `header "ce_type" is CloudEvents' own`},
		{"source", func(c *Config) { c.Source = "http://a b/%zz" }, `route.Config.Source: "http://a b/%zz" is not a URI-reference`},
	} {
		err := presetConfig(t, tc.cfg).Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestParseField(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want Field
		err  string
	}{
		{"tenant:header", Field{Column: "tenant", Place: PlaceHeader}, ""},
		{"trace:header:traceparent", Field{Column: "trace", Place: PlaceHeader, Alias: "traceparent"}, ""},
		{"v:envelope:dataschema", Field{Column: "v", Place: PlaceEnvelope, Alias: "dataschema"}, ""},
		{"tenant", Field{}, "write COLUMN:header[:ALIAS] or COLUMN:envelope[:ALIAS]"},
		{":header", Field{}, "write COLUMN:header"},
		{"a:partition", Field{}, `placement "partition" is not header or envelope`},
		{"a:header:", Field{}, "the alias after the second ':' is empty"},
		{"a:header:b:c", Field{}, "write COLUMN:header"},
	} {
		got, err := ParseField(tc.spec)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseField(%q) = %v, %v; want error %q", tc.spec, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want || got.String() != tc.spec {
			t.Errorf("ParseField(%q) = %+v (%s), %v; want %+v", tc.spec, got, got, err, tc.want)
		}
	}
}

func TestDeriveSource(t *testing.T) {
	if got := DeriveSource("app", "Sales", "Outbox Events"); got != "/app/Sales/Outbox%20Events" {
		t.Errorf("DeriveSource = %q", got)
	}
}

func TestMessages(t *testing.T) {
	cfg := presetConfig(t, func(c *Config) { c.TombstoneOnEmptyPayload = true })
	ms, err := NewMessages(cfg, "outbox")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := ms.Event([]byte(`{"id": "m1", "aggregate_type": "Order", "aggregate_id": "42", "event_type": "Paid",
		"payload": {"a": [1, 2]}, "headers": {"traceparent": "tp", "id": "forged", "n": 1}}`), meta)
	if err != nil || ev.ID != "m1" || ev.Topic != "outbox.event.Order" || string(ev.Key) != "42" || string(ev.Value) != `{"a": [1, 2]}` {
		t.Fatalf("event %+v, %v", ev, err)
	}
	if h := headerMap(ev); h["traceparent"] != "tp" || h["id"] != "m1" || h["event_type"] != "Paid" {
		t.Errorf("headers %v", h)
	}
	ev, err = ms.Event([]byte(`{"id": "m2", "aggregate_type": "Order", "aggregate_id": "42", "event_type": "Deleted", "payload": null}`), meta)
	if err != nil || ev.Value != nil || string(ev.Key) != "42" {
		t.Errorf("null payload: value %q key %q, %v; want a tombstone", ev.Value, ev.Key, err)
	}
	for _, tc := range []struct{ content, want string }{
		{`not json`, "is not the documented JSON object"},
		{`["x"]`, "is not the documented JSON object"},
		{`{"id": "m3", "aggregate_type": "Order", "aggregate_id": "42", "event_type": "Paid", "payload": 1, "extra": 1}`, `member "extra" is not one of`},
		// Found by review: names matched case-insensitively (id "y" won),
		// invalid UTF-8 folded distinct ids into one, and a missing payload
		// became a tombstone.
		{`{"id": "x", "ID": "y", "aggregate_type": "Order", "aggregate_id": "42", "event_type": "Paid", "payload": 1}`, `member "ID" is not one of`},
		{"{\"id\": \"x\xff\", \"aggregate_type\": \"Order\", \"aggregate_id\": \"42\", \"event_type\": \"Paid\", \"payload\": 1}", `not valid UTF-8`},
		{`{"id": "m4", "aggregate_type": "Order", "aggregate_id": "42", "event_type": "Paid"}`, `has no "payload"`},
		{`{"id": "m3", "aggregate_type": "Order", "aggregate_id": 42, "event_type": "Paid", "payload": 1}`, "cannot unmarshal number"},
		{`{"aggregate_type": "Order", "aggregate_id": "42", "event_type": "Paid", "payload": 1}`, `has no "id"`},
		{`{"id": "", "aggregate_type": "Order", "aggregate_id": "42", "event_type": "Paid", "payload": 1}`, `has no "id"`},
		{`{"id": "m3", "aggregate_type": "Order", "aggregate_id": "42", "payload": 1}`, `has no "event_type"`},
		{`{"id": "m3", "aggregate_type": "Order", "aggregate_id": "42", "event_type": "Paid", "payload": 1, "headers": [1]}`, `"headers" is not a JSON object`},
		{`{"id": "m3", "aggregate_type": "Order", "aggregate_id": "42", "event_type": "Paid", "payload": 1} {}`, "more than one JSON value"},
		{`{"id": "m3", "aggregate_type": "a b", "aggregate_id": "42", "event_type": "Paid", "payload": 1}`, `topic name "outbox.event.a b"`},
	} {
		ev, err := ms.Event([]byte(tc.content), meta)
		var ue *UnmappableError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) || string(ev.Value) != tc.content {
			t.Errorf("%s: %v, value %q; want an UnmappableError saying %q that keeps the content", tc.content, err, ev.Value, tc.want)
		}
	}
	cfg.Topic = "events.{tenant}"
	if _, err := NewMessages(cfg, "outbox"); !outboxrelay.IsConfigError(err) || !strings.Contains(err.Error(), `no column(s) ["tenant"]`) {
		t.Errorf("a template naming no member: %v, want a ConfigError", err)
	}
}

// A timestamp the producer cannot encode is unmappable, not a batch sarama
// refuses forever (found by review: -1 and MaxInt64 passed).
func TestTimestampOutsideKafkaRange(t *testing.T) {
	for _, v := range []string{"-1", "9223372036854775807", "1969-12-31 23:59:59+00"} {
		oid := uint32(oidInt8)
		if strings.Contains(v, ":") {
			oid = 0
		}
		if ts, err := parseTimestamp([]byte(v), oid); err == nil {
			t.Errorf("timestamp %s read as %s, want it refused", v, ts)
		}
	}
	if _, err := parseTimestamp([]byte("1717000000000"), oidInt8); err != nil {
		t.Errorf("epoch milliseconds of 2024 refused: %v", err)
	}
}
