package route

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// Event builds the record for one row. vals holds one Value per column of
// the relation Bind was given, in its order. Every slice is copied: vals
// alias a buffer reused for the next message. The copies share one
// allocation sized up front; each is capped, so appending to one never
// writes into the next.
//
// A row that cannot become a record returns an *UnmappableError together
// with what is known of the event (its position, and its ID when not NULL).
func (b *Binding) Event(vals []Value, meta Meta) (outboxrelay.Event, error) {
	ev := outboxrelay.Event{LSN: meta.LSN, CommitLSN: meta.CommitLSN, CommitTime: meta.CommitTime}
	idv := vals[b.id]
	if idv.Kind != Text {
		return ev, &UnmappableError{Reason: fmt.Sprintf("outbox row at LSN %s has a NULL id (column %q)", meta.LSN, b.m.cfg.Columns.ID)}
	}
	ev.ID = string(idv.Data)
	a := arena(make([]byte, 0, b.size(vals)))
	id := a.keep(idv.Data)
	if err := b.setPayload(&ev, vals, &a); err != nil {
		return ev, err
	}

	topic, err := b.m.topic(b.topic, vals)
	if err != nil {
		return ev, &UnmappableError{Reason: fmt.Sprintf("outbox row %.80q: %v", ev.ID, err)}
	}
	ev.Topic = topic

	if b.key == b.id {
		ev.Key = id
	} else if kv := vals[b.key]; kv.Kind == Text {
		ev.Key = a.keep(kv.Data)
	}
	ev.PartitionKey = ev.Key
	if b.partition != b.key {
		if pv := vals[b.partition]; pv.Kind == Text {
			ev.PartitionKey = a.keep(pv.Data)
		}
	}

	ev.Headers = make([]outboxrelay.Header, 0, b.headerCap())
	ev.Headers = append(ev.Headers, outboxrelay.Header{Key: "id", Value: id})
	for _, h := range b.headerCols {
		if v := vals[h.col]; v.Kind == Text {
			ev.Headers = append(ev.Headers, outboxrelay.Header{Key: h.key, Value: a.keep(v.Data)})
		}
	}
	for _, f := range b.fields {
		if v := vals[f.col]; f.Place == PlaceHeader && v.Kind == Text {
			ev.Headers = append(ev.Headers, outboxrelay.Header{Key: f.Name(), Value: a.keep(v.Data)})
		}
	}
	if b.headers >= 0 {
		if hv := vals[b.headers]; hv.Kind == Text {
			ev.Headers = appendJSONHeaders(ev.Headers, hv.Data, b.ownHeader)
		}
	}
	if err := b.finish(&ev, vals, meta); err != nil {
		return ev, &UnmappableError{Reason: fmt.Sprintf("outbox row %.80q: %v", ev.ID, err)}
	}
	return ev, nil
}

// setPayload sets ev.Value from the payload column: nil, a tombstone, for
// a NULL payload when the config asks for one.
func (b *Binding) setPayload(ev *outboxrelay.Event, vals []Value, a *arena) error {
	switch pv := vals[b.payload]; {
	case pv.Kind != Text && b.m.cfg.TombstoneOnEmptyPayload && pv.Kind == Null:
		ev.Value = nil
	case pv.Kind != Text:
		return &UnmappableError{Reason: fmt.Sprintf("outbox row %.80q has a NULL payload (column %q)", ev.ID, b.m.cfg.Columns.Payload)}
	case b.bytea:
		v, err := decodeBytea(pv.Data)
		if err != nil {
			return &UnmappableError{Reason: fmt.Sprintf("outbox row %.80q: payload: %v", ev.ID, err)}
		}
		ev.Value = v
	default:
		ev.Value = a.keep(pv.Data)
	}
	return nil
}

// finish sets the record timestamp and wraps the payload in the envelope.
func (b *Binding) finish(ev *outboxrelay.Event, vals []Value, meta Meta) error {
	at := meta.CommitTime
	if b.ts >= 0 {
		if v := vals[b.ts]; v.Kind == Text {
			t, err := parseTimestamp(v.Data, b.tsOID)
			if err != nil {
				return fmt.Errorf("timestamp column %q: %w", b.m.cfg.TimestampColumn, err)
			}
			at, ev.Timestamp = t, t
		}
	}
	switch b.m.cfg.envelope() {
	case EnvelopeCloudEvents:
		return b.cloudEvents(ev, vals, at)
	case EnvelopeJSON:
		return b.jsonEnvelope(ev, vals, at)
	}
	return nil
}

// headerCap is how many headers a record has before the headers column's.
func (b *Binding) headerCap() int {
	n := 4 + len(b.fields)
	if b.m.cfg.envelope() == EnvelopeCloudEvents {
		n += 8
	}
	return n
}

// ownHeader reports whether a headers-column entry would pose as a header
// the relay sets: a placed column, or a CloudEvents attribute.
func (b *Binding) ownHeader(key string) bool {
	if b.m.cfg.envelope() == EnvelopeCloudEvents && (strings.HasPrefix(key, "ce_") || key == "content-type") {
		return true
	}
	for _, f := range b.fields {
		if f.Place == PlaceHeader && f.Name() == key {
			return true
		}
	}
	return false
}

// size is the arena Event needs for vals: every kept copy, the id once.
func (b *Binding) size(vals []Value) int {
	size := len(vals[b.id].Data)
	if !b.bytea {
		size += len(vals[b.payload].Data)
	}
	if b.key != b.id {
		size += len(vals[b.key].Data)
	}
	if b.partition != b.key {
		size += len(vals[b.partition].Data)
	}
	for _, h := range b.headerCols {
		size += len(vals[h.col].Data)
	}
	for _, f := range b.fields {
		if f.Place == PlaceHeader {
			size += len(vals[f.col].Data)
		}
	}
	return size
}

// arena hands out capped copies from one buffer allocated with enough
// capacity for all of them.
type arena []byte

func (a *arena) keep(b []byte) []byte {
	start := len(*a)
	*a = append(*a, b...)
	return (*a)[start:len(*a):len(*a)]
}

// topic renders a bound template for vals. A topic is validated once, when
// first rendered, and then served from the cache without allocating.
func (m *Mapper) topic(segs []segmentIndex, vals []Value) (string, error) {
	if len(segs) == 1 && segs[0].col < 0 {
		return segs[0].literal, nil
	}
	buf := m.topicBuf[:0]
	for _, s := range segs {
		if s.col < 0 {
			buf = append(buf, s.literal...)
			continue
		}
		v := vals[s.col]
		if v.Kind != Text {
			return "", fmt.Errorf("topic template placeholder {%s} is NULL", s.name)
		}
		buf = append(buf, v.Data...)
	}
	m.topicBuf = buf
	if topic, ok := m.topics[string(buf)]; ok {
		return topic, nil
	}
	topic := string(buf)
	if err := ValidTopic(topic); err != nil {
		return "", err
	}
	if len(m.topics) >= maxCachedTopics {
		clear(m.topics)
	}
	m.topics[topic] = topic
	return topic, nil
}

// reservedHeaders are set by the relay from the row's columns. A headers
// column may not add a second copy (nor one of a placed column's, nor a
// CloudEvents attribute): consumers dedupe on the first `id` they find,
// and a row must not be able to pose as another event.
var reservedHeaders = map[string]bool{"id": true, "event_type": true, "aggregate_type": true, "aggregate_id": true}

// appendJSONHeaders adds the string entries of a JSON object, except the
// reserved ones. Other values are left out: a header is bytes, and guessing
// an encoding for numbers or objects would surprise a consumer more than
// their absence.
func appendJSONHeaders(hs []outboxrelay.Header, raw []byte, own func(string) bool) []outboxrelay.Header {
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return hs
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		if reservedHeaders[k] || own(k) {
			continue
		}
		v := obj[k]
		var s string
		if len(v) > 0 && v[0] == '"' && json.Unmarshal(v, &s) == nil {
			hs = append(hs, outboxrelay.Header{Key: k, Value: []byte(s)})
		}
	}
	return hs
}

// decodeBytea reads bytea's text output (hex format, the default since 9.0).
func decodeBytea(text []byte) ([]byte, error) {
	if len(text) < 2 || text[0] != '\\' || text[1] != 'x' {
		return nil, fmt.Errorf("bytea is not in hex format; set bytea_output = 'hex'")
	}
	out := make([]byte, hex.DecodedLen(len(text)-2))
	if _, err := hex.Decode(out, text[2:]); err != nil {
		return nil, fmt.Errorf("bytea: %w", err)
	}
	return out, nil
}
