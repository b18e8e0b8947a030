package route

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"unicode/utf8"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// Messages maps the content of transactional logical decoding messages,
// pg_logical_emit_message(true, prefix, content), to Events: the
// table-less outbox. The content is one JSON object, MessageMembers, and
// is routed like a row of the default outbox table (the topic template,
// key and partition name its members). Like a Mapper, one goroutine at a
// time uses it.
type Messages struct {
	b    *Binding
	vals []Value
}

// MessageMembers are the members of a message's JSON content, in the
// order of the columns they stand for: id, aggregate_type, aggregate_id,
// event_type are strings; payload any JSON (null: a NULL payload);
// headers an optional object whose string entries become headers.
var MessageMembers = []string{"id", "aggregate_type", "aggregate_id", "event_type", "payload", "headers"}

// messageColumns is the relation a message stands for.
var messageColumns = []Column{
	{Name: "id", TypeOID: 25}, {Name: "aggregate_type", TypeOID: 25}, {Name: "aggregate_id", TypeOID: 25},
	{Name: "event_type", TypeOID: 25}, {Name: "payload", TypeOID: oidJSONB}, {Name: "headers", TypeOID: oidJSONB},
}

// NewMessages validates cfg for messages with prefix: its column names
// are the members' (DefaultColumns), and placed fields or a timestamp
// column, which a message has no columns for, are not used.
func NewMessages(cfg Config, prefix string) (*Messages, error) {
	cfg.Columns = DefaultColumns()
	cfg.Fields, cfg.TimestampColumn, cfg.TimestampOptional = nil, "", false
	m, err := New(cfg)
	if err != nil {
		return nil, err
	}
	b, err := m.Bind(fmt.Sprintf("logical messages with prefix %q", prefix), messageColumns)
	if err != nil {
		return nil, configErr(fmt.Sprintf("logical messages (prefix %q) carry only the members %q: %v", prefix, MessageMembers, err),
			"name only those in --topic, --key-column and --partition-by")
	}
	return &Messages{b: b, vals: make([]Value, len(messageColumns))}, nil
}

// messageContent is the documented content; a pointer is nil when the
// member is missing or null.
type messageContent struct {
	ID            *string         `json:"id"`
	AggregateType *string         `json:"aggregate_type"`
	AggregateID   *string         `json:"aggregate_id"`
	EventType     *string         `json:"event_type"`
	Payload       json.RawMessage `json:"payload"`
	Headers       json.RawMessage `json:"headers"`
}

// Event builds the record for one message's content. Content that is not
// the documented JSON is an *UnmappableError; the Event then carries the
// content as its Value, so a dead letter keeps it. content aliases the
// receive buffer: what the Event keeps is copied.
func (ms *Messages) Event(content []byte, meta Meta) (outboxrelay.Event, error) {
	ev, err := ms.event(content, meta)
	if err != nil {
		ev.Value = bytes.Clone(content)
	}
	return ev, err
}

func (ms *Messages) event(content []byte, meta Meta) (outboxrelay.Event, error) {
	ev := outboxrelay.Event{LSN: meta.LSN, CommitLSN: meta.CommitLSN, CommitTime: meta.CommitTime}
	if !utf8.Valid(content) {
		// Go's decoder would turn each invalid byte into U+FFFD, so two
		// distinct ids could become one.
		return ev, &UnmappableError{Reason: fmt.Sprintf("logical message at LSN %s is not the documented JSON object: not valid UTF-8", meta.LSN)}
	}
	if err := exactMembers(content); err != nil {
		return ev, &UnmappableError{Reason: fmt.Sprintf("logical message at LSN %s is not the documented JSON object: %v", meta.LSN, err)}
	}
	var c messageContent
	dec := json.NewDecoder(bytes.NewReader(content))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || dec.More() {
		if err == nil {
			err = fmt.Errorf("more than one JSON value")
		}
		return ev, &UnmappableError{Reason: fmt.Sprintf("logical message at LSN %s is not the documented JSON object (members %q): %v", meta.LSN, MessageMembers, err)}
	}
	if c.ID != nil {
		ev.ID = *c.ID
	}
	for i, s := range []*string{c.ID, c.AggregateType, c.AggregateID, c.EventType} {
		if s == nil || i == 0 && *s == "" {
			return ev, &UnmappableError{Reason: fmt.Sprintf("logical message at LSN %s has no %q (a string, not empty for the id)", meta.LSN, MessageMembers[i])}
		}
		ms.vals[i] = Value{Kind: Text, Data: []byte(*s)}
	}
	if c.Payload == nil {
		// Only an explicit null may become a tombstone.
		return ev, &UnmappableError{Reason: fmt.Sprintf("logical message %.80q has no \"payload\" (write null for none)", ev.ID)}
	}
	ms.vals[4], ms.vals[5] = jsonMember(c.Payload), jsonMember(c.Headers)
	if v := ms.vals[5]; v.Kind == Text && v.Data[0] != '{' {
		return ev, &UnmappableError{Reason: fmt.Sprintf("logical message %.80q: \"headers\" is not a JSON object", ev.ID)}
	}
	return ms.b.Event(ms.vals, meta)
}

// jsonMember is a member's raw JSON as a Value, NULL when missing or null.
func jsonMember(raw json.RawMessage) Value {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return Value{}
	}
	return Value{Kind: Text, Data: raw}
}

// exactMembers refuses an object whose member names are not exactly the
// documented ones: Go's decoder matches names case-insensitively, so
// {"id": "x", "ID": "y"} would pass as id "y".
func exactMembers(content []byte) error {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(content, &members); err != nil {
		return nil // not an object: the full decode says so
	}
	for name := range members {
		if !slices.Contains(MessageMembers, name) {
			return fmt.Errorf("member %.40q is not one of %q (names are case-sensitive)", name, MessageMembers)
		}
	}
	return nil
}
