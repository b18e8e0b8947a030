package route

import (
	"errors"
	"strings"
	"testing"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// outboxColumns is testdata/outbox.sql's table as a Relation describes it.
var outboxColumns = []Column{
	{Name: "id", TypeOID: 2950}, {Name: "aggregate_type", TypeOID: 25}, {Name: "aggregate_id", TypeOID: 25},
	{Name: "event_type", TypeOID: 25}, {Name: "payload", TypeOID: 3802}, {Name: "headers", TypeOID: 3802},
	{Name: "created_at", TypeOID: 1184},
}

const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// row makes Values from strings; a nil entry is NULL.
func row(vals ...*string) []Value {
	out := make([]Value, len(vals))
	for i, v := range vals {
		if v != nil {
			out[i] = Value{Kind: Text, Data: []byte(*v)}
		}
	}
	return out
}

func s(v string) *string { return &v }

// outboxRow is a row of outboxColumns.
func outboxRow(id, aggType, payload *string) []Value {
	return row(id, aggType, s("agg-1"), s("Created"), payload, s(`{"traceparent": "`+traceparent+`"}`), s("2025-01-01 00:00:00+00"))
}

var meta = Meta{LSN: 0x1234, CommitLSN: 0x1300, CommitTime: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}

func bind(t testing.TB, cfg Config, cols []Column) *Binding {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Bind(`"public"."outbox"`, cols)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func header(ev outboxrelay.Event, key string) (string, bool) {
	for _, h := range ev.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

func TestEvent(t *testing.T) {
	type want struct {
		topic, key, partitionKey, value string
		headers                         map[string]string // "" value: the header must be absent
	}
	cases := []struct {
		name string
		cfg  func(*Config)
		cols []Column
		row  []Value
		want want
	}{
		{"defaults", nil, outboxColumns, outboxRow(s("e1"), s("order"), s(`{"total": 10}`)),
			want{"outbox.event.order", "e1", "agg-1", `{"total": 10}`, map[string]string{
				"id": "e1", "event_type": "Created", "aggregate_type": "order", "aggregate_id": "agg-1", "traceparent": traceparent}}},
		{"columns mapped by name, not position", nil,
			append([]Column{{Name: "tenant", TypeOID: 25}}, append(outboxColumns, Column{Name: "extra", TypeOID: 25})...),
			append(row(s("t1")), append(outboxRow(s("e2"), s("payment"), s(`{}`)), row(s("x"))...)...),
			want{"outbox.event.payment", "e2", "agg-1", `{}`, map[string]string{"id": "e2"}}},
		{"renamed columns, two-placeholder template, bytea payload, partition by key, no headers column",
			func(c *Config) {
				c.Columns = Columns{ID: "event_id", AggregateType: "aggregatetype", AggregateID: "aggregateid", EventType: "type", Payload: "body"}
				c.Topic, c.KeyColumn, c.PartitionBy = "{aggregatetype}.{type}", "aggregate_id", PartitionByKey
			},
			[]Column{{Name: "event_id", TypeOID: 2950}, {Name: "aggregatetype", TypeOID: 25}, {Name: "aggregateid", TypeOID: 25},
				{Name: "type", TypeOID: 25}, {Name: "body", TypeOID: 17}, {Name: "headers", TypeOID: 3802}},
			row(s("e3"), s("Order"), s("42"), s("Paid"), s(`\x00ff10`), s(`{"traceparent": "tp"}`)),
			want{"Order.Paid", "42", "42", "\x00\xff\x10", map[string]string{"id": "e3", "aggregate_id": "42", "traceparent": ""}}},
		{"key and partition columns of their own, literal topic",
			func(c *Config) { c.Topic, c.KeyColumn, c.PartitionBy = "fixed", "aggregate_id", "event_type" },
			outboxColumns, outboxRow(s("e4"), s("order"), s(`{}`)),
			want{"fixed", "agg-1", "Created", `{}`, nil}},
		{"NULL key column: no key, and the partition follows it",
			func(c *Config) { c.KeyColumn, c.PartitionBy = "aggregate_id", PartitionByKey },
			outboxColumns, row(s("e5"), s("order"), nil, s("Created"), s(`{}`), nil, nil),
			want{"outbox.event.order", "", "", `{}`, map[string]string{"aggregate_id": ""}}},
		// Regression: a headers column carrying "id" added a second id
		// header, which consumers that dedupe on the first one would trust.
		{"headers column: only string entries, reserved keys refused", nil, outboxColumns,
			row(s("e6"), s("order"), s("agg-1"), s("Created"), s(`{}`),
				s(`{"id": "forged", "event_type": "Forged", "aggregate_id": "x", "aggregate_type": "y", "n": 1, "o": {"a": "b"}, "b": "2", "a": "1"}`), nil),
			want{"outbox.event.order", "e6", "agg-1", `{}`, map[string]string{
				"id": "e6", "event_type": "Created", "aggregate_id": "agg-1", "aggregate_type": "order", "a": "1", "b": "2", "n": "", "o": ""}}},
		{"headers column not an object", nil, outboxColumns,
			row(s("e7"), s("order"), s("agg-1"), s("Created"), s(`{}`), s(`["x"]`), nil),
			want{"outbox.event.order", "e7", "agg-1", `{}`, map[string]string{"0": ""}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			ev, err := bind(t, cfg, tc.cols).Event(tc.row, meta)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Topic != tc.want.topic || string(ev.Key) != tc.want.key || string(ev.PartitionKey) != tc.want.partitionKey || string(ev.Value) != tc.want.value {
				t.Errorf("topic %q key %q partition key %q value %q, want %q %q %q %q",
					ev.Topic, ev.Key, ev.PartitionKey, ev.Value, tc.want.topic, tc.want.key, tc.want.partitionKey, tc.want.value)
			}
			if ev.LSN != meta.LSN || ev.CommitLSN != meta.CommitLSN || !ev.CommitTime.Equal(meta.CommitTime) {
				t.Errorf("position %s %s %v, want the Meta's", ev.LSN, ev.CommitLSN, ev.CommitTime)
			}
			for k, want := range tc.want.headers {
				if got, ok := header(ev, k); ok != (want != "") || got != want {
					t.Errorf("header %q = %q (present %v), want %q", k, got, ok, want)
				}
			}
			seen := map[string]bool{}
			for _, h := range ev.Headers {
				if seen[h.Key] {
					t.Errorf("header %q twice in %+v", h.Key, ev.Headers)
				}
				seen[h.Key] = true
			}
		})
	}
}

func TestEventUnmappable(t *testing.T) {
	cases := []struct {
		name, id string // id: what ev.ID must say
		cfg      func(*Config)
		cols     []Column
		row      []Value
		want     string
	}{
		{"NULL id", "", nil, outboxColumns, outboxRow(nil, s("order"), s("{}")),
			`outbox row at LSN 0/1234 has a NULL id (column "id")`},
		{"unchanged (TOASTed) id", "", nil, outboxColumns,
			func() []Value { r := outboxRow(s("x"), s("order"), s("{}")); r[0] = Value{Kind: Unchanged}; return r }(),
			"NULL id"},
		{"NULL payload", "e1", nil, outboxColumns, outboxRow(s("e1"), s("order"), nil),
			`outbox row "e1" has a NULL payload (column "payload")`},
		{"binary payload", "e2", nil, outboxColumns,
			func() []Value { r := outboxRow(s("e2"), s("order"), s("{}")); r[4].Kind = Binary; return r }(),
			"NULL payload"},
		{"bytea not in hex", "e3", nil,
			[]Column{{Name: "id", TypeOID: 2950}, {Name: "aggregate_type", TypeOID: 25}, {Name: "aggregate_id", TypeOID: 25},
				{Name: "event_type", TypeOID: 25}, {Name: "payload", TypeOID: 17}, {Name: "headers", TypeOID: 3802}},
			row(s("e3"), s("order"), s("a"), s("Created"), s(`\001`), nil),
			"outbox row \"e3\": payload: bytea is not in hex format; set bytea_output = 'hex'"},
		{"bytea with a bad digit", "e4", nil,
			[]Column{{Name: "id", TypeOID: 2950}, {Name: "aggregate_type", TypeOID: 25}, {Name: "aggregate_id", TypeOID: 25},
				{Name: "event_type", TypeOID: 25}, {Name: "payload", TypeOID: 17}, {Name: "headers", TypeOID: 3802}},
			row(s("e4"), s("order"), s("a"), s("Created"), s(`\xzz`), nil),
			"outbox row \"e4\": payload: bytea: encoding/hex"},
		{"topic with a space", "e5", nil, outboxColumns, outboxRow(s("e5"), s("bad type"), s("{}")),
			`outbox row "e5": topic name "outbox.event.bad type" has ' '; Kafka allows only`},
		{"NULL topic value", "e6", nil, outboxColumns, outboxRow(s("e6"), nil, s("{}")),
			"outbox row \"e6\": topic template placeholder {aggregate_type} is NULL"},
		{"topic too long", "e7", func(c *Config) { c.Topic = strings.Repeat("t", 249) + "{id}" }, outboxColumns,
			outboxRow(s("e7"), s("order"), s("{}")), "is 251 characters; Kafka allows 249"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			ev, err := bind(t, cfg, tc.cols).Event(tc.row, meta)
			var ue *UnmappableError
			if !errors.As(err, &ue) {
				t.Fatalf("got %v, want an *UnmappableError", err)
			}
			if !strings.Contains(ue.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", ue, tc.want)
			}
			if ev.ID != tc.id || ev.LSN != meta.LSN || ev.CommitLSN != meta.CommitLSN {
				t.Fatalf("unmappable event %+v lost its id or position", ev)
			}
		})
	}
}

// pgx reuses its receive buffer: an Event aliasing it would change under
// the relay's feet. Each copy is capped, so appending to one cannot
// overwrite the next one in the shared arena.
func TestEventCopiesBytes(t *testing.T) {
	cfg := DefaultConfig()
	cfg.KeyColumn = "aggregate_id"
	vals := outboxRow(s("e1"), s("order"), s(`{"a": 1}`))
	ev, err := bind(t, cfg, outboxColumns).Event(vals, meta)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vals {
		for i := range v.Data {
			v.Data[i] = 'X'
		}
	}
	_ = append(ev.Key, "!!!!!!!!"...)
	_ = append(ev.Value, "!!!!!!!!"...)
	if ev.ID != "e1" || string(ev.Key) != "agg-1" || string(ev.Value) != `{"a": 1}` || string(ev.PartitionKey) != "agg-1" {
		t.Fatalf("event changed with its input or an append: %+v", ev)
	}
	for k, want := range map[string]string{"id": "e1", "event_type": "Created", "aggregate_type": "order", "traceparent": traceparent} {
		if got, _ := header(ev, k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
}

// Tests assert on this text, and operators search for it: keep it.
func TestBindMissingColumnIsAConfigError(t *testing.T) {
	cases := []struct {
		name    string
		cfg     func(*Config)
		cols    []Column
		missing string
	}{
		{"payload dropped", nil,
			[]Column{{Name: "id"}, {Name: "aggregate_type"}, {Name: "aggregate_id"}, {Name: "event_type"}, {Name: "headers"}},
			`["payload"]`},
		{"headers column configured, absent", nil,
			[]Column{{Name: "id"}, {Name: "aggregate_type"}, {Name: "aggregate_id"}, {Name: "event_type"}, {Name: "payload"}},
			`["headers"]`},
		{"key, partition and template columns, in that order",
			func(c *Config) { c.KeyColumn, c.PartitionBy, c.Topic = "k", "p", "{tenant}.{aggregate_type}" }, outboxColumns,
			`["k" "p" "tenant"]`},
		{"renamed columns the table lacks",
			func(c *Config) { c.Columns.EventType, c.Columns.Payload = "type", "body" }, outboxColumns,
			`["type" "body"]`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			m, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			b, err := m.Bind(`"public"."outbox"`, tc.cols)
			want := `outbox table "public"."outbox" has no column(s) ` + tc.missing +
				"; add them, or point the column flags (--id-column, --payload-column, --field, --timestamp-column, ...) at the existing names"
			var ce *outboxrelay.ConfigError
			if b != nil || !errors.As(err, &ce) || err.Error() != want {
				t.Fatalf("Bind = %v, %v; want a ConfigError %q", b, err, want)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	cases := []struct {
		name string
		cfg  func(*Config)
		want []string
	}{
		{"defaults", func(*Config) {}, nil},
		{"no headers column", func(c *Config) { c.Columns.Headers = "" }, nil},
		{"empty names", func(c *Config) { c.Columns.ID, c.KeyColumn, c.PartitionBy = "", "", "" },
			[]string{"route.Config.Columns.ID: must not be empty", "route.Config.KeyColumn: must not be empty", "route.Config.PartitionBy: must not be empty"}},
		{"empty template", func(c *Config) { c.Topic = "" },
			[]string{"route.Config.Topic: must not be empty", "topic template is empty"}},
		{"bad template", func(c *Config) { c.Topic = "x.{aggregate_type" }, []string{`topic template "x.{aggregate_type": unclosed '{'`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.cfg(&cfg)
			_, err := New(cfg)
			if (err != nil) != (tc.want != nil) {
				t.Fatalf("New = %v, want errors %q", err, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New = %v, want it to say %q", err, w)
				}
			}
		})
	}
}

// A routed topic is validated once and then costs no allocation; the
// cache of them stays bounded whatever the data routes to.
func TestTopicCache(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Topic = "outbox.{aggregate_id}"
	b := bind(t, cfg, outboxColumns)
	vals := outboxRow(s("e1"), s("order"), s("{}"))
	for i := range 3 * maxCachedTopics {
		vals[2] = Value{Kind: Text, Data: []byte(strings.Repeat("a", i%7) + string(rune('a'+i%26)) + string(rune('0'+i/26%10)) + string(rune('0'+i/260)))}
		if _, err := b.m.topic(b.topic, vals); err != nil {
			t.Fatal(err)
		}
		if len(b.m.topics) > maxCachedTopics {
			t.Fatalf("%d cached topics, want at most %d", len(b.m.topics), maxCachedTopics)
		}
	}
	vals[2] = Value{Kind: Text, Data: []byte("agg-1")}
	if allocs := testing.AllocsPerRun(100, func() {
		if topic, err := b.m.topic(b.topic, vals); err != nil || topic != "outbox.agg-1" {
			t.Fatalf("topic %q, %v", topic, err)
		}
	}); allocs != 0 {
		t.Errorf("a cached topic costs %v allocations, want 0", allocs)
	}
}

func TestColumnsResolve(t *testing.T) {
	renamed := Columns{ID: "event_id", AggregateType: "aggregatetype", AggregateID: "aggregateid", EventType: "type", Payload: "body"}
	for _, tc := range []struct {
		cols       Columns
		name, want string
	}{
		{DefaultColumns(), "aggregate_type", "aggregate_type"},
		{renamed, "aggregate_type", "aggregatetype"},
		{renamed, "id", "event_id"},
		{renamed, "tenant", "tenant"},
		{renamed, "aggregatetype", "aggregatetype"},
		// No headers column configured: the name is taken as a column.
		{renamed, "headers", "headers"},
	} {
		if got := tc.cols.Resolve(tc.name); got != tc.want {
			t.Errorf("%+v.Resolve(%q) = %q, want %q", tc.cols, tc.name, got, tc.want)
		}
	}
	if got := renamed.Required(); strings.Join(got, ",") != "event_id,aggregatetype,aggregateid,type,body" {
		t.Errorf("Required = %q", got)
	}
}

func BenchmarkEvent(b *testing.B) {
	bd := bind(b, DefaultConfig(), outboxColumns)
	vals := outboxRow(s("0195d6c2-6e4b-7cc1-9a3e-1f2d3c4b5a69"), s("order"), s(`{"seq": 42, "pad": "`+strings.Repeat("0123456789abcdef", 29)+`"}`))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bd.Event(vals, meta); err != nil {
			b.Fatal(err)
		}
	}
}
