package route

import (
	"fmt"
	"slices"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// Mapper turns rows of the outbox into Events as one Config says. It
// caches rendered topic names: one goroutine at a time uses a Mapper and
// the Bindings it made.
type Mapper struct {
	cfg      Config
	template []segment
	// topics holds the topics already built and validated, so a routed
	// topic costs no allocation after its first event.
	topics   map[string]string
	topicBuf []byte
}

// maxCachedTopics bounds Mapper.topics; past it the cache starts over.
const maxCachedTopics = 256

// New validates cfg and returns its Mapper.
func New(cfg Config) (*Mapper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tmpl, _ := parseTemplate(cfg.Topic) // Validate parsed it
	return &Mapper{cfg: cfg, template: tmpl, topics: make(map[string]string)}, nil
}

// Column is one column of a relation, as a pgoutput Relation message
// describes it.
type Column struct {
	Name    string
	TypeOID uint32
}

// ValueKind says what a Value holds.
type ValueKind uint8

const (
	// Null is SQL NULL (the zero Value).
	Null ValueKind = iota
	// Unchanged is a TOASTed value the change did not carry.
	Unchanged
	// Text is a value in its type's text output format.
	Text
	// Binary is a value in its type's binary format; the relay asks for
	// text, so a row carrying one is unmappable.
	Binary
)

// Value is one column of a row as the decoder read it. Data aliases the
// receive buffer: Event copies what it keeps.
type Value struct {
	Kind ValueKind
	Data []byte
}

// Meta is where a row sits in the WAL.
type Meta struct {
	// LSN is the insert's position; CommitLSN and CommitTime are its
	// transaction's commit record's.
	LSN        outboxrelay.LSN
	CommitLSN  outboxrelay.LSN
	CommitTime time.Time
}

const oidBytea = 17

// Binding is a Mapper resolved against one relation's columns: the index
// of each outbox field in that relation's rows.
type Binding struct {
	m *Mapper
	// column indexes of the outbox fields; headers is -1 when absent.
	id, payload, headers, key, partition int
	bytea                                bool // the payload is bytea: decode it
	payloadOID                           uint32
	headerCols                           [3]headerColumn
	topic                                []segmentIndex
	// fields are the placed columns; ts is the timestamp column, -1 for
	// the commit time.
	fields []boundField
	ts     int
	tsOID  uint32
	// source is ce_source: Config.Source, or the relation's name.
	source string
}

// boundField is a placed column found in the relation.
type boundField struct {
	Field
	col     int
	typeOID uint32
}

// headerColumn is a column every record carries as a header.
type headerColumn struct {
	key string
	col int
}

type segmentIndex struct {
	literal string
	col     int // -1 for a literal
	name    string
}

// Bind finds the configured columns in cols by name: users add columns
// while the relay runs, so positions are never assumed. table names the
// relation in the error, a ConfigError, when a column is missing.
func (m *Mapper) Bind(table string, cols []Column) (*Binding, error) {
	var missing []string
	must := func(name string) int {
		for i, c := range cols {
			if c.Name == name {
				return i
			}
		}
		missing = append(missing, name)
		return -1
	}
	c := m.cfg.Columns
	b := &Binding{m: m, id: must(c.ID), headers: -1}
	aggType, aggID, evType := must(c.AggregateType), must(c.AggregateID), must(c.EventType)
	b.headerCols = [3]headerColumn{{"event_type", evType}, {"aggregate_type", aggType}, {"aggregate_id", aggID}}
	b.payload = must(c.Payload)
	if c.Headers != "" {
		b.headers = must(c.Headers)
	}
	b.key = must(c.Resolve(m.cfg.KeyColumn))
	b.partition = b.key
	if m.cfg.PartitionBy != PartitionByKey {
		b.partition = must(c.Resolve(m.cfg.PartitionBy))
	}
	for _, s := range m.template {
		if s.name == "" {
			b.topic = append(b.topic, segmentIndex{literal: s.literal, col: -1})
			continue
		}
		b.topic = append(b.topic, segmentIndex{col: must(c.Resolve(s.name)), name: s.name})
	}
	m.bindPlaced(b, table, cols, must)
	if len(missing) > 0 {
		return nil, configErr(
			fmt.Sprintf("outbox table %s has no column(s) %q", table, missing),
			"add them, or point the column flags (--id-column, --payload-column, --field, --timestamp-column, ...) at the existing names")
	}
	b.payloadOID = cols[b.payload].TypeOID
	b.bytea = b.payloadOID == oidBytea
	for i := range b.fields {
		b.fields[i].typeOID = cols[b.fields[i].col].TypeOID
	}
	if b.ts >= 0 {
		b.tsOID = cols[b.ts].TypeOID
	}
	return b, nil
}

// bindPlaced finds the placed columns and the timestamp column; must
// records the missing ones.
func (m *Mapper) bindPlaced(b *Binding, table string, cols []Column, must func(string) int) {
	b.ts, b.source = -1, m.cfg.Source
	if b.source == "" {
		b.source = table
	}
	for _, f := range m.cfg.Fields {
		b.fields = append(b.fields, boundField{Field: f, col: must(f.Column)})
	}
	if tc := m.cfg.TimestampColumn; tc != "" {
		if m.cfg.TimestampOptional && !slices.ContainsFunc(cols, func(c Column) bool { return c.Name == tc }) {
			return
		}
		b.ts = must(tc)
	}
}
