package replication

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// Kind says what a Message asks of the relay.
type Kind uint8

const (
	// KindEvent is an outbox row to produce (or, with Err set, one that
	// cannot be produced as configured).
	KindEvent Kind = iota + 1
	// KindCommit ends a transaction; LSN is its end LSN.
	KindCommit
	// KindKeepalive is a position with no outbox rows before it, received
	// outside any transaction; LSN is the server's WAL end.
	KindKeepalive
)

// Message is one item of the stream, in WAL order.
type Message struct {
	Kind  Kind
	LSN   outboxrelay.LSN
	Event outboxrelay.Event
	// Err is an *UnmappableError for an outbox row that cannot become a
	// record; Event then carries what is known (ID, LSN, CommitLSN).
	Err error
}

// Change kinds the decoder skips, for metrics.
const (
	SkippedUpdate     = "update"
	SkippedDelete     = "delete"
	SkippedTruncate   = "truncate"
	SkippedOtherTable = "other_table"
	SkippedMessage    = "logical_message"
)

const (
	oidBytea = 17
)

type column struct {
	name string
	oid  uint32
}

// relation is a table as the last Relation message described it.
type relation struct {
	namespace, name string
	columns         []column
	outbox          bool
	// column indexes of the outbox fields; -1 when absent (headers only).
	id, aggType, aggID, evType, payload, headers, key, partition int
	topic                                                        []segmentIndex
}

type segmentIndex struct {
	literal string
	col     int // -1 for a literal
	name    string
}

// Decoder turns pgoutput v1 messages into Messages. It keeps the relation
// cache and the current transaction, so one Decoder reads one stream, in
// order, from one goroutine.
type Decoder struct {
	table    TableName
	isOutbox OutboxMatcher
	cols     Columns
	routing  Routing
	template []segment

	relations map[uint32]*relation
	inTxn     bool
	commitLSN outboxrelay.LSN
	commitAt  time.Time
	vals      []colValue
	onSkip    func(kind string)
	// topics holds the topics already built and validated, so a routed
	// topic costs no allocation after its first event.
	topics   map[string]string
	topicBuf []byte
}

// maxCachedTopics bounds Decoder.topics; past it the cache starts over.
const maxCachedTopics = 256

// NewDecoder returns a Decoder for cfg's table and routing. onSkip, if not
// nil, is told of every change it skips.
func NewDecoder(cfg Config, onSkip func(kind string)) (*Decoder, error) {
	tmpl, err := parseTemplate(cfg.Routing.Topic)
	if err != nil {
		return nil, err
	}
	if onSkip == nil {
		onSkip = func(string) {}
	}
	d := &Decoder{
		table: cfg.TableName(),
		cols:  cfg.Columns, routing: cfg.Routing, template: tmpl,
		relations: make(map[uint32]*relation),
		onSkip:    onSkip,
		topics:    make(map[string]string),
	}
	d.isOutbox = func(_ uint32, namespace, name string, _ []string) (bool, error) {
		return namespace == d.table.Schema && name == d.table.Table, nil
	}
	return d, nil
}

// OutboxMatcher says whether the relation a Relation message describes is
// the outbox. A publication without publish_via_partition_root sends a
// partitioned outbox's rows under its partitions' names and ids, so name
// alone does not tell. columns are the relation's column names.
type OutboxMatcher func(relid uint32, namespace, name string, columns []string) (bool, error)

// MatchOutbox replaces the default matcher (the configured schema and
// table by name). Call it before the first Decode.
func (d *Decoder) MatchOutbox(m OutboxMatcher) { d.isOutbox = m }

// InTransaction reports whether a Begin was decoded without its Commit.
func (d *Decoder) InTransaction() bool { return d.inTxn }

// Decode reads one pgoutput message that started at walStart. ok is false
// when the message needs no action by the relay. The returned Message owns
// its bytes. An error means the stream is corrupt or the table no longer
// fits the configuration: retrying will not help.
func (d *Decoder) Decode(walStart outboxrelay.LSN, data []byte) (msg Message, ok bool, err error) {
	if len(data) == 0 {
		return Message{}, false, fmt.Errorf("empty pgoutput message at %s", walStart)
	}
	r := reader{buf: data[1:]}
	switch data[0] {
	case 'B':
		d.commitLSN = r.lsn()
		d.commitAt = r.time()
		r.u32() // xid
		d.inTxn = true
	case 'C':
		r.u8()  // flags
		r.lsn() // commit LSN
		end := r.lsn()
		r.time() // commit time, already known from Begin
		if r.err == nil {
			d.inTxn = false
			msg, ok = Message{Kind: KindCommit, LSN: end}, true
		}
	case 'R':
		err = d.relation(&r)
	case 'I':
		msg, ok, err = d.insert(walStart, &r)
	case 'U':
		d.onSkip(SkippedUpdate)
	case 'D':
		d.onSkip(SkippedDelete)
	case 'T':
		d.onSkip(SkippedTruncate)
	case 'M':
		// Heartbeats (pg_logical_emit_message with prefix outbox-relay) and
		// other applications' messages: they move the WAL, never Kafka.
		d.onSkip(SkippedMessage)
	case 'O', 'Y':
		// Origin and Type carry nothing the relay routes on.
	default:
		return Message{}, false, fmt.Errorf("unknown pgoutput message type %q at %s", data[0], walStart)
	}
	if err == nil && r.err != nil {
		err = r.err
	}
	if err != nil {
		return Message{}, false, fmt.Errorf("decode pgoutput %q message at %s: %w", data[0], walStart, err)
	}
	return msg, ok, nil
}

func (d *Decoder) relation(r *reader) error {
	id := r.u32()
	rel := &relation{namespace: r.cstring(), name: r.cstring()}
	r.u8() // replica identity
	n := int(r.u16())
	for i := 0; i < n && r.err == nil; i++ {
		r.u8() // flags
		rel.columns = append(rel.columns, column{name: r.cstring(), oid: r.u32()})
		r.u32() // type modifier
	}
	if r.err != nil {
		return r.err
	}
	names := make([]string, len(rel.columns))
	for i, c := range rel.columns {
		names[i] = c.name
	}
	var err error
	if rel.outbox, err = d.isOutbox(id, rel.namespace, rel.name, names); err != nil {
		return err
	}
	if rel.outbox {
		if err := d.bind(rel); err != nil {
			return err
		}
	}
	d.relations[id] = rel
	return nil
}

// bind finds the configured columns by name: users add columns while the
// relay runs, so positions are never assumed.
func (d *Decoder) bind(rel *relation) error {
	index := func(name string) int {
		for i, c := range rel.columns {
			if c.name == name {
				return i
			}
		}
		return -1
	}
	var missing []string
	must := func(name string) int {
		i := index(name)
		if i < 0 {
			missing = append(missing, name)
		}
		return i
	}
	rel.id = must(d.cols.ID)
	rel.aggType = must(d.cols.AggregateType)
	rel.aggID = must(d.cols.AggregateID)
	rel.evType = must(d.cols.EventType)
	rel.payload = must(d.cols.Payload)
	rel.headers = -1
	if d.cols.Headers != "" {
		rel.headers = must(d.cols.Headers)
	}
	rel.key = must(d.cols.Resolve(d.routing.KeyColumn))
	rel.partition = rel.key
	if d.routing.PartitionBy != PartitionByKey {
		rel.partition = must(d.cols.Resolve(d.routing.PartitionBy))
	}
	rel.topic = rel.topic[:0]
	for _, s := range d.template {
		if s.name == "" {
			rel.topic = append(rel.topic, segmentIndex{literal: s.literal, col: -1})
			continue
		}
		rel.topic = append(rel.topic, segmentIndex{col: must(d.cols.Resolve(s.name)), name: s.name})
	}
	if len(missing) > 0 {
		return configErr(
			fmt.Sprintf("outbox table %s has no column(s) %q", TableName{rel.namespace, rel.name}, missing),
			"add them, or point the column flags (--id-column, --payload-column, ...) at the existing names")
	}
	return nil
}

func (d *Decoder) insert(walStart outboxrelay.LSN, r *reader) (Message, bool, error) {
	id := r.u32()
	rel := d.relations[id]
	if rel == nil {
		return Message{}, false, fmt.Errorf("insert into relation %d before its Relation message", id)
	}
	if !rel.outbox {
		d.onSkip(SkippedOtherTable)
		return Message{}, false, nil
	}
	if tag := r.u8(); tag != 'N' && r.err == nil {
		return Message{}, false, fmt.Errorf("insert tuple tag %q, want 'N'", tag)
	}
	var err error
	d.vals, err = r.readTuple(d.vals)
	if err != nil {
		return Message{}, false, err
	}
	if len(d.vals) != len(rel.columns) {
		return Message{}, false, fmt.Errorf("insert has %d columns, relation %s has %d", len(d.vals), rel.name, len(rel.columns))
	}
	ev, err := d.event(rel, walStart)
	return Message{Kind: KindEvent, LSN: walStart, Event: ev, Err: err}, true, nil
}

// headerColumn is a column every record carries as a header.
type headerColumn struct {
	key string
	col int
}

// headerColumns are the header columns besides the id.
func headerColumns(rel *relation) [3]headerColumn {
	return [3]headerColumn{{"event_type", rel.evType}, {"aggregate_type", rel.aggType}, {"aggregate_id", rel.aggID}}
}

// event builds the record. Every slice is copied: pgx reuses its receive
// buffer for the next message. The copies share one allocation sized up
// front (the relay's per-event allocations are its main GC cost); each is
// capped, so appending to one never writes into the next.
func (d *Decoder) event(rel *relation, lsn outboxrelay.LSN) (outboxrelay.Event, error) {
	ev := outboxrelay.Event{LSN: lsn, CommitLSN: d.commitLSN, CommitTime: d.commitAt}
	idv := d.vals[rel.id]
	if idv.kind != colText {
		return ev, &UnmappableError{Reason: fmt.Sprintf("outbox row at LSN %s has a NULL id (column %q)", lsn, d.cols.ID)}
	}
	ev.ID = string(idv.data)

	pv := d.vals[rel.payload]
	bytea := rel.columns[rel.payload].oid == oidBytea
	hcols := headerColumns(rel)
	size := len(idv.data)
	if !bytea {
		size += len(pv.data)
	}
	if rel.key != rel.id {
		size += len(d.vals[rel.key].data)
	}
	if rel.partition != rel.key {
		size += len(d.vals[rel.partition].data)
	}
	for _, h := range hcols {
		size += len(d.vals[h.col].data)
	}
	a := arena(make([]byte, 0, size))
	id := a.keep(idv.data)

	switch {
	case pv.kind != colText:
		return ev, &UnmappableError{Reason: fmt.Sprintf("outbox row %s has a NULL payload (column %q)", ev.ID, d.cols.Payload)}
	case bytea:
		v, err := decodeBytea(pv.data)
		if err != nil {
			return ev, &UnmappableError{Reason: fmt.Sprintf("outbox row %s: payload: %v", ev.ID, err)}
		}
		ev.Value = v
	default:
		ev.Value = a.keep(pv.data)
	}

	topic, err := d.topic(rel)
	if err != nil {
		return ev, &UnmappableError{Reason: fmt.Sprintf("outbox row %s: %v", ev.ID, err)}
	}
	ev.Topic = topic

	if rel.key == rel.id {
		ev.Key = id
	} else if kv := d.vals[rel.key]; kv.kind == colText {
		ev.Key = a.keep(kv.data)
	}
	ev.PartitionKey = ev.Key
	if rel.partition != rel.key {
		if pv := d.vals[rel.partition]; pv.kind == colText {
			ev.PartitionKey = a.keep(pv.data)
		}
	}

	ev.Headers = make([]outboxrelay.Header, 0, 4)
	ev.Headers = append(ev.Headers, outboxrelay.Header{Key: "id", Value: id})
	for _, h := range hcols {
		if v := d.vals[h.col]; v.kind == colText {
			ev.Headers = append(ev.Headers, outboxrelay.Header{Key: h.key, Value: a.keep(v.data)})
		}
	}
	if rel.headers >= 0 {
		if hv := d.vals[rel.headers]; hv.kind == colText {
			ev.Headers = appendJSONHeaders(ev.Headers, hv.data)
		}
	}
	return ev, nil
}

// arena hands out capped copies from one buffer allocated with enough
// capacity for all of them.
type arena []byte

func (a *arena) keep(b []byte) []byte {
	start := len(*a)
	*a = append(*a, b...)
	return (*a)[start:len(*a):len(*a)]
}

func (d *Decoder) topic(rel *relation) (string, error) {
	if len(rel.topic) == 1 && rel.topic[0].col < 0 {
		return rel.topic[0].literal, nil
	}
	b := d.topicBuf[:0]
	for _, s := range rel.topic {
		if s.col < 0 {
			b = append(b, s.literal...)
			continue
		}
		v := d.vals[s.col]
		if v.kind != colText {
			return "", fmt.Errorf("topic template placeholder {%s} is NULL", s.name)
		}
		b = append(b, v.data...)
	}
	d.topicBuf = b
	if topic, ok := d.topics[string(b)]; ok {
		return topic, nil
	}
	topic := string(b)
	if err := ValidTopic(topic); err != nil {
		return "", err
	}
	if len(d.topics) >= maxCachedTopics {
		clear(d.topics)
	}
	d.topics[topic] = topic
	return topic, nil
}

// reservedHeaders are set by the relay from the row's columns. A headers
// column may not add a second copy: consumers dedupe on the first `id` they
// find, and a row must not be able to pose as another event.
var reservedHeaders = map[string]bool{"id": true, "event_type": true, "aggregate_type": true, "aggregate_id": true}

// appendJSONHeaders adds the string entries of a JSON object, except the
// reserved ones. Other values are left out: a header is bytes, and guessing
// an encoding for numbers or objects would surprise a consumer more than
// their absence.
func appendJSONHeaders(hs []outboxrelay.Header, raw []byte) []outboxrelay.Header {
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return hs
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		if reservedHeaders[k] {
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
