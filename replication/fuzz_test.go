package replication

import (
	"encoding/binary"
	"errors"
	"testing"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/route"
)

// The fuzz seeds are testdata/fuzz/FuzzDecode/: frames captured from a
// Postgres 15 pgoutput stream (an outbox insert, a rename, NULLs, a bytea
// payload, updates and deletes, a logical message), plus the hand-built
// frames added below. Run a fuzzer with e.g.
//
//	go test ./replication -run '^$' -fuzz FuzzDecode -fuzztime 1m

// frames joins pgoutput messages into one fuzz input: each is a 4-byte
// big-endian length followed by the message.
func frames(msgs ...[]byte) []byte {
	var out []byte
	for _, m := range msgs {
		out = binary.BigEndian.AppendUint32(out, uint32(len(m)))
		out = append(out, m...)
	}
	return out
}

// splitFrames undoes frames; a short tail becomes one last message, so
// every input is decoded in full.
func splitFrames(in []byte) [][]byte {
	var out [][]byte
	for len(in) > 0 {
		if len(in) < 4 {
			return append(out, in)
		}
		n := int(binary.BigEndian.Uint32(in))
		in = in[4:]
		if n > len(in) {
			return append(out, in)
		}
		out = append(out, in[:n])
		in = in[n:]
	}
	return out
}

// column is a relation column as relationMsg encodes it.
type column struct {
	name string
	oid  uint32
}

func cstr(b []byte, s string) []byte { return append(append(b, s...), 0) }

func relationMsg(id uint32, schema, table string, cols []column) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'R'}, id)
	b = cstr(b, schema)
	b = cstr(b, table)
	b = append(b, 'd')
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for _, c := range cols {
		b = append(b, 0)
		b = cstr(b, c.name)
		b = binary.BigEndian.AppendUint32(b, c.oid)
		b = binary.BigEndian.AppendUint32(b, 0xffffffff)
	}
	return b
}

// insertMsg encodes a new tuple; a nil value is a NULL column.
func insertMsg(rel uint32, vals [][]byte) []byte {
	b := binary.BigEndian.AppendUint32([]byte{'I'}, rel)
	b = append(b, 'N')
	b = binary.BigEndian.AppendUint16(b, uint16(len(vals)))
	for _, v := range vals {
		if v == nil {
			b = append(b, 'n')
			continue
		}
		b = append(b, 't')
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

func beginMsg(commit outboxrelay.LSN) []byte {
	b := binary.BigEndian.AppendUint64([]byte{'B'}, uint64(commit))
	b = binary.BigEndian.AppendUint64(b, 770000000000000)
	return binary.BigEndian.AppendUint32(b, 742)
}

func commitMsg(commit, end outboxrelay.LSN) []byte {
	b := binary.BigEndian.AppendUint64([]byte{'C', 0}, uint64(commit))
	b = binary.BigEndian.AppendUint64(b, uint64(end))
	return binary.BigEndian.AppendUint64(b, 770000000000000)
}

// outboxColumns is testdata/outbox.sql's table as a Relation describes it.
var outboxColumns = []column{
	{"id", 2950}, {"aggregate_type", 25}, {"aggregate_id", 25}, {"event_type", 25},
	{"payload", 3802}, {"headers", 3802}, {"created_at", 1184},
}

func outboxRow(id, aggType string, payload []byte) [][]byte {
	return [][]byte{[]byte(id), []byte(aggType), []byte("agg-1"), []byte("Created"), payload,
		[]byte(`{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}`),
		[]byte("2025-01-01 00:00:00+00")}
}

func FuzzDecode(f *testing.F) {
	rel := relationMsg(16384, "public", "outbox", outboxColumns)
	f.Add(frames(rel, beginMsg(0x1000), insertMsg(16384, outboxRow("a1", "order", []byte(`{"a": 1}`))), commitMsg(0x1000, 0x1100)))
	f.Add(frames(rel, insertMsg(16384, outboxRow("a2", "bad topic", []byte(`{}`)))))
	f.Add(frames(rel, insertMsg(16384, [][]byte{nil, nil, nil, nil, nil, nil, nil})))
	f.Add(frames(relationMsg(1, "public", "other", []column{{"x", 23}}), insertMsg(1, [][]byte{[]byte("1")})))
	f.Add(frames([]byte{'U'}, []byte{'D'}, []byte{'T'}, []byte{'M'}, []byte{'O'}, []byte{'Y'}))
	f.Add([]byte{})
	f.Add([]byte{'I', 0, 0, 0x40, 0, 'N', 0xff, 0xff})

	f.Fuzz(func(t *testing.T, in []byte) {
		cfg := DefaultConfig()
		cfg.ConnString = "postgres://fuzz"
		d, err := NewDecoder(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		check := func(lsn outboxrelay.LSN, data []byte) {
			msg, ok, err := d.Decode(lsn, data)
			if err != nil {
				if ok {
					t.Fatalf("Decode(%q) = ok and error %v", data, err)
				}
				return
			}
			if !ok || msg.Kind != KindEvent {
				return
			}
			var ue *route.UnmappableError
			if msg.Err != nil {
				if !errors.As(msg.Err, &ue) {
					t.Fatalf("Decode(%q): event error %T %v, want *route.UnmappableError", data, msg.Err, msg.Err)
				}
				return
			}
			if err := route.ValidTopic(msg.Event.Topic); err != nil {
				t.Fatalf("Decode(%q) routed to a topic Kafka refuses: %v", data, err)
			}
			if msg.Event.LSN != lsn {
				t.Fatalf("event LSN %s, want the message's %s", msg.Event.LSN, lsn)
			}
		}
		// Malformed input must be an error, never a panic, and must not
		// leave the decoder in a state where later messages panic.
		for i, m := range splitFrames(in) {
			check(outboxrelay.LSN(0x2000+i), m)
		}
		check(0x9000, in)
	})
}
