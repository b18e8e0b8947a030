package replication

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/route"
)

func newTestDecoder(t *testing.T, mutate func(*Config)) (*Decoder, map[string]int) {
	t.Helper()
	cfg := DefaultConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	skipped := map[string]int{}
	d, err := NewDecoder(cfg, func(kind string) { skipped[kind]++ })
	if err != nil {
		t.Fatal(err)
	}
	return d, skipped
}

func decodeAll(t *testing.T, d *Decoder, msgs ...[]byte) []Message {
	t.Helper()
	var out []Message
	for i, m := range msgs {
		msg, ok, err := d.Decode(outboxrelay.LSN(0x100+i), m)
		if err != nil {
			t.Fatalf("message %d (%q): %v", i, m[0], err)
		}
		if ok {
			out = append(out, msg)
		}
	}
	return out
}

func header(ev outboxrelay.Event, key string) (string, bool) {
	for _, h := range ev.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

func TestDecodeOutboxTransaction(t *testing.T) {
	d, _ := newTestDecoder(t, nil)
	msgs := decodeAll(t, d,
		relationMsg(1, "public", "outbox", outboxColumns),
		beginMsg(0x5000),
		insertMsg(1, outboxRow("e1", "order", []byte(`{"total": 10}`))),
		commitMsg(0x5000, 0x5080),
	)
	if len(msgs) != 2 || msgs[0].Kind != KindEvent || msgs[1].Kind != KindCommit {
		t.Fatalf("got %+v, want an event then a commit", msgs)
	}
	ev := msgs[0].Event
	if msgs[0].Err != nil {
		t.Fatal(msgs[0].Err)
	}
	if ev.ID != "e1" || string(ev.Key) != "e1" || ev.Topic != "outbox.event.order" || string(ev.Value) != `{"total": 10}` {
		t.Fatalf("event %+v", ev)
	}
	if string(ev.PartitionKey) != "agg-1" {
		t.Fatalf("partition key %q, want the aggregate id", ev.PartitionKey)
	}
	if ev.CommitLSN != 0x5000 || ev.CommitTime.Year() < 2024 {
		t.Fatalf("commit LSN %s time %v", ev.CommitLSN, ev.CommitTime)
	}
	for key, want := range map[string]string{"id": "e1", "event_type": "Created", "aggregate_type": "order",
		"aggregate_id": "agg-1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"} {
		if got, ok := header(ev, key); !ok || got != want {
			t.Errorf("header %s = %q, want %q", key, got, want)
		}
	}
	if msgs[1].LSN != 0x5080 {
		t.Fatalf("commit message carries %s, want the end LSN 0/5080 (the commit LSN would resend the transaction)", msgs[1].LSN)
	}
	if d.InTransaction() {
		t.Fatal("still in a transaction after Commit")
	}
}

func TestDecodeCopiesBytes(t *testing.T) {
	// pgx reuses its receive buffer; an Event aliasing it would change
	// under the relay's feet.
	d, _ := newTestDecoder(t, nil)
	decodeAll(t, d, relationMsg(1, "public", "outbox", outboxColumns), beginMsg(1))
	frame := insertMsg(1, outboxRow("e1", "order", []byte(`{"a": 1}`)))
	msg, _, err := d.Decode(2, frame)
	if err != nil {
		t.Fatal(err)
	}
	for i := range frame {
		frame[i] = 'X'
	}
	if msg.Event.ID != "e1" || string(msg.Event.Value) != `{"a": 1}` || string(msg.Event.PartitionKey) != "agg-1" {
		t.Fatalf("event changed with the receive buffer: %+v", msg.Event)
	}
	if v, _ := header(msg.Event, "event_type"); v != "Created" {
		t.Fatalf("header changed with the receive buffer: %q", v)
	}
}

func TestDecodeMapsColumnsByName(t *testing.T) {
	d, _ := newTestDecoder(t, nil)
	// A column added in front (by a table rewrite) and one at the end.
	cols := append([]column{{"tenant", 25}}, outboxColumns...)
	cols = append(cols, column{"extra", 25})
	row := append([][]byte{[]byte("t1")}, outboxRow("e2", "payment", []byte(`{}`))...)
	row = append(row, []byte("x"))
	msgs := decodeAll(t, d, relationMsg(7, "public", "outbox", cols), beginMsg(1), insertMsg(7, row))
	if ev := msgs[0].Event; ev.ID != "e2" || ev.Topic != "outbox.event.payment" {
		t.Fatalf("columns mapped by position: %+v", ev)
	}
}

// The mapping's failures (route.UnmappableError, tested in route) reach
// the relay on the Message, with the row's position, not as a Decode error.
func TestDecodeUnmappableRowIsAMessage(t *testing.T) {
	d, _ := newTestDecoder(t, nil)
	row := outboxRow("x", "order", []byte("{}"))
	row[0] = nil
	msgs := decodeAll(t, d, relationMsg(1, "public", "outbox", outboxColumns), beginMsg(0x900), insertMsg(1, row))
	var ue *route.UnmappableError
	if len(msgs) != 1 || msgs[0].Kind != KindEvent || !errors.As(msgs[0].Err, &ue) || !strings.Contains(ue.Error(), "NULL id") {
		t.Fatalf("got %+v, want one event carrying an UnmappableError", msgs)
	}
	if msgs[0].Event.LSN != 0x102 || msgs[0].Event.CommitLSN != 0x900 {
		t.Fatalf("unmappable event lost its position: %+v", msgs[0].Event)
	}
}

func TestDecodeSkipsWhatIsNotAnOutboxInsert(t *testing.T) {
	d, skipped := newTestDecoder(t, nil)
	update := append([]byte{'U'}, insertMsg(1, outboxRow("e", "order", []byte("{}")))[1:]...)
	msgs := decodeAll(t, d,
		relationMsg(1, "public", "outbox", outboxColumns),
		relationMsg(2, "public", "orders", []column{{"id", 20}}),
		beginMsg(1),
		insertMsg(2, [][]byte{[]byte("1")}),
		update,
		[]byte{'D', 0, 0, 0, 1},
		[]byte{'T', 0, 0, 0, 1},
		// A transactional pg_logical_emit_message('outbox-relay', 'hb').
		append(cstr([]byte{'M', 1, 0, 0, 0, 0, 0, 0, 0, 9}, "outbox-relay"), 0, 0, 0, 2, 'h', 'b'),
		commitMsg(1, 2),
	)
	if len(msgs) != 1 || msgs[0].Kind != KindCommit {
		t.Fatalf("got %+v, want only the commit", msgs)
	}
	for _, kind := range []string{SkippedOtherTable, SkippedUpdate, SkippedDelete, SkippedTruncate, SkippedMessage} {
		if skipped[kind] != 1 {
			t.Errorf("skipped[%s] = %d, want 1", kind, skipped[kind])
		}
	}
}

func TestDecodeMissingColumnIsAConfigError(t *testing.T) {
	d, _ := newTestDecoder(t, nil)
	// A Relation without the payload column: someone dropped it mid-stream.
	cols := []column{{"id", 2950}, {"aggregate_type", 25}, {"aggregate_id", 25}, {"event_type", 25}, {"headers", 3802}}
	_, _, err := d.Decode(1, relationMsg(1, "public", "outbox", cols))
	if !outboxrelay.IsConfigError(err) || !strings.Contains(err.Error(), `"payload"`) {
		t.Fatalf("got %v, want a ConfigError naming the payload column", err)
	}
}

func TestDecodeRejectsMalformedInput(t *testing.T) {
	d, _ := newTestDecoder(t, nil)
	decodeAll(t, d, relationMsg(1, "public", "outbox", outboxColumns), beginMsg(1))
	full := insertMsg(1, outboxRow("e1", "order", []byte(`{"a": 1}`)))
	for _, in := range [][]byte{nil, {'Z'}, full[:len(full)-3], {'I', 0, 0, 0, 9, 'N', 0, 0}, {'C', 0, 1}} {
		if _, _, err := d.Decode(1, in); err == nil {
			t.Errorf("Decode(%q) succeeded, want an error", in)
		}
	}
}

func logicalMsg(transactional bool, prefix, content string) []byte {
	flags := byte(0)
	if transactional {
		flags = 1
	}
	b := binary.BigEndian.AppendUint64([]byte{'M', flags}, 0x5010)
	b = cstr(b, prefix)
	b = binary.BigEndian.AppendUint32(b, uint32(len(content)))
	return append(b, content...)
}

// With a message prefix, transactional messages with it are events in
// their place in the transaction; other prefixes, non-transactional ones
// and content that is not the documented JSON are not dropped silently.
func TestDecodeLogicalMessages(t *testing.T) {
	d, skipped := newTestDecoder(t, func(c *Config) {
		c.ConnString, c.Table, c.MessagePrefix = "postgres://h/app", "", "outbox"
	})
	content := `{"id": "m1", "aggregate_type": "order", "aggregate_id": "42", "event_type": "Paid", "payload": {"n": 1}}`
	msgs := decodeAll(t, d,
		logicalMsg(false, "outbox", content),
		beginMsg(0x5000),
		logicalMsg(true, "outbox", content),
		logicalMsg(true, "other", content),
		logicalMsg(true, "outbox", `{"id": "m2"`),
		commitMsg(0x5000, 0x5080),
	)
	if len(msgs) != 3 || msgs[0].Kind != KindEvent || msgs[1].Kind != KindEvent || msgs[2].Kind != KindCommit {
		t.Fatalf("got %+v, want two events and a commit", msgs)
	}
	ev := msgs[0].Event
	if msgs[0].Err != nil || ev.ID != "m1" || ev.Topic != "outbox.event.order" || string(ev.Value) != `{"n": 1}` || ev.CommitLSN != 0x5000 || ev.LSN != 0x102 {
		t.Errorf("event %+v, %v", ev, msgs[0].Err)
	}
	var ue *route.UnmappableError
	if !errors.As(msgs[1].Err, &ue) || string(msgs[1].Event.Value) != `{"id": "m2"` {
		t.Errorf("bad content: %v, value %q; want an UnmappableError keeping the content", msgs[1].Err, msgs[1].Event.Value)
	}
	if skipped[SkippedMessage] != 2 {
		t.Errorf("skipped %v, want the non-transactional message and the other prefix counted", skipped)
	}
}

func TestTableLessConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ConnString, cfg.Table = "postgres://h/app", ""
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "replication.Config.Table: must not be empty (only a table-less outbox") {
		t.Errorf("no table, no prefix: %v", err)
	}
	cfg.MessagePrefix = "outbox"
	if err := cfg.Validate(); err != nil {
		t.Errorf("table-less: %v", err)
	}
	cfg.Route.TimestampColumn = "ts"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "logical messages have no columns to place") {
		t.Errorf("placement without a table: %v", err)
	}
	if got := cfg.MessageSource(); got != "/app/message/outbox" {
		t.Errorf("MessageSource = %q", got)
	}
}

// Rows of two outboxes in one transaction are routed each by its own
// configuration, in WAL order.
func TestDecodeSeveralOutboxes(t *testing.T) {
	d, _ := newTestDecoder(t, func(c *Config) {
		rt, err := route.Preset("debezium")
		if err != nil {
			t.Fatal(err)
		}
		rt.Topic = "payments.{type}"
		c.Outboxes = []Outbox{{Table: "billing.outbox", Route: rt}}
	})
	dbzColumns := []column{{"id", 2950}, {"aggregatetype", 25}, {"aggregateid", 25}, {"type", 25}, {"payload", 3802}}
	msgs := decodeAll(t, d,
		relationMsg(1, "public", "outbox", outboxColumns),
		relationMsg(2, "billing", "outbox", dbzColumns),
		beginMsg(0x5000),
		insertMsg(1, outboxRow("e1", "order", []byte(`{}`))),
		insertMsg(2, [][]byte{[]byte("e2"), []byte("Payment"), []byte("p-7"), []byte("Charged"), []byte(`{"n": 2}`)}),
		commitMsg(0x5000, 0x5080),
	)
	if len(msgs) != 3 || msgs[0].Err != nil || msgs[1].Err != nil {
		t.Fatalf("got %+v", msgs)
	}
	if ev := msgs[0].Event; ev.ID != "e1" || ev.Topic != "outbox.event.order" || string(ev.Key) != "e1" {
		t.Errorf("first outbox's event %+v", ev)
	}
	if ev := msgs[1].Event; ev.ID != "e2" || ev.Topic != "payments.Charged" || string(ev.Key) != "p-7" || string(ev.Value) != `{"n": 2}` {
		t.Errorf("second outbox's event %+v", ev)
	}
}

func TestOutboxesConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ConnString = "postgres://h/app"
	bad := route.DefaultConfig()
	bad.Topic = ""
	cfg.Outboxes = []Outbox{{Table: "public.outbox", Route: route.DefaultConfig()}, {Table: "", Route: route.DefaultConfig()}, {Table: "x.y", Route: bad}}
	err := cfg.Validate()
	for _, want := range []string{
		"replication.Config.Outboxes[0].Table: \"public\".\"outbox\" is already outbox 1",
		"replication.Config.Outboxes[1].Table: must not be empty",
		"replication.Config.Outboxes[2].Route.Topic: must not be empty",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want %q", err, want)
		}
	}
}
