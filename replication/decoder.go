package replication

import (
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/route"
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
	// Err is a *route.UnmappableError for an outbox row that cannot become
	// a record; Event then carries what is known (ID, LSN, CommitLSN).
	Err error
}

// Change kinds the decoder skips, for metrics.
const (
	SkippedUpdate     = "update"
	SkippedDelete     = "delete"
	SkippedTruncate   = "truncate"
	SkippedOtherTable = "other_table"
	SkippedMessage    = "logical_message"
	// SkippedDelivered is an outbox row the durable record says an earlier
	// session delivered (Plan.Delivered): Postgres resends it after its
	// slot moved back.
	SkippedDelivered = "delivered"
)

// relation is a table as the last Relation message described it.
type relation struct {
	namespace, name string
	columns         []route.Column
	// binding maps the outbox's rows; nil for any other table.
	binding *route.Binding
}

// Decoder turns pgoutput v1 messages into Messages. It keeps the relation
// cache and the current transaction, so one Decoder reads one stream, in
// order, from one goroutine.
type Decoder struct {
	table    TableName
	isOutbox OutboxMatcher
	mapper   *route.Mapper
	// extras map the rows of Config.Outboxes, found by name.
	extras map[TableName]*route.Mapper
	// messages maps logical messages with prefix; nil without a prefix.
	messages *route.Messages
	prefix   string

	relations map[uint32]*relation
	inTxn     bool
	commitLSN outboxrelay.LSN
	commitAt  time.Time
	vals      []route.Value
	onSkip    func(kind string)
}

// NewDecoder returns a Decoder for cfg's table and routing. onSkip, if not
// nil, is told of every change it skips.
func NewDecoder(cfg Config, onSkip func(kind string)) (*Decoder, error) {
	var messages *route.Messages
	if cfg.MessagePrefix != "" {
		mc := cfg.Route
		if mc.Source == "" {
			mc.Source = cfg.MessageSource()
		}
		var err error
		if messages, err = route.NewMessages(mc, cfg.MessagePrefix); err != nil {
			return nil, err
		}
	}
	extras, err := extraMappers(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Route.Source == "" {
		cfg.Route.Source = cfg.DefaultSource()
	}
	mapper, err := route.New(cfg.Route)
	if err != nil {
		return nil, err
	}
	if onSkip == nil {
		onSkip = func(string) {}
	}
	d := &Decoder{
		table:     cfg.TableName(),
		mapper:    mapper,
		extras:    extras,
		messages:  messages,
		prefix:    cfg.MessagePrefix,
		relations: make(map[uint32]*relation),
		onSkip:    onSkip,
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
	switch pglogrepl.MessageType(data[0]) {
	case pglogrepl.MessageTypeBegin:
		d.commitLSN = r.lsn()
		d.commitAt = r.time()
		r.u32() // xid
		d.inTxn = true
	case pglogrepl.MessageTypeCommit:
		r.u8()  // flags
		r.lsn() // commit LSN
		end := r.lsn()
		r.time() // commit time, already known from Begin
		if r.err == nil {
			d.inTxn = false
			msg, ok = Message{Kind: KindCommit, LSN: end}, true
		}
	case pglogrepl.MessageTypeRelation:
		err = d.relation(&r)
	case pglogrepl.MessageTypeInsert:
		msg, ok, err = d.insert(walStart, &r)
	case pglogrepl.MessageTypeUpdate:
		d.onSkip(SkippedUpdate)
	case pglogrepl.MessageTypeDelete:
		d.onSkip(SkippedDelete)
	case pglogrepl.MessageTypeTruncate:
		d.onSkip(SkippedTruncate)
	case pglogrepl.MessageTypeMessage:
		msg, ok = d.message(walStart, &r)
	case pglogrepl.MessageTypeOrigin, pglogrepl.MessageTypeType:
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
		rel.columns = append(rel.columns, route.Column{Name: r.cstring(), TypeOID: r.u32()})
		r.u32() // type modifier
	}
	if r.err != nil {
		return r.err
	}
	names := make([]string, len(rel.columns))
	for i, c := range rel.columns {
		names[i] = c.Name
	}
	// Extra outboxes first: the partition lookup of the first one would
	// take a table of its shape for a detached partition.
	table := TableName{rel.namespace, rel.name}
	if m, ok := d.extras[table]; ok {
		var err error
		if rel.binding, err = m.Bind(table.String(), rel.columns); err != nil {
			return err
		}
		d.relations[id] = rel
		return nil
	}
	outbox, err := d.isOutbox(id, rel.namespace, rel.name, names)
	if err != nil {
		return err
	}
	if outbox {
		// Columns are found by name: users add columns while the relay
		// runs, so positions are never assumed.
		if rel.binding, err = d.mapper.Bind(table.String(), rel.columns); err != nil {
			return err
		}
	}
	d.relations[id] = rel
	return nil
}

func (d *Decoder) insert(walStart outboxrelay.LSN, r *reader) (Message, bool, error) {
	id := r.u32()
	rel := d.relations[id]
	if rel == nil {
		return Message{}, false, fmt.Errorf("insert into relation %d before its Relation message", id)
	}
	if rel.binding == nil {
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
	ev, err := rel.binding.Event(d.vals, route.Meta{LSN: walStart, CommitLSN: d.commitLSN, CommitTime: d.commitAt})
	return Message{Kind: KindEvent, LSN: walStart, Event: ev, Err: err}, true, nil
}

// message reads a logical decoding message. Only transactional ones with
// the configured prefix are events: heartbeats (non-transactional, prefix
// outbox-relay), other applications' messages and non-transactional ones
// (sent at once, whatever becomes of their transaction) move the WAL,
// never Kafka, and are counted.
func (d *Decoder) message(walStart outboxrelay.LSN, r *reader) (Message, bool) {
	flags := r.u8()
	r.lsn() // the message's own LSN, walStart
	prefix := r.cstring()
	content := r.bytes(int(int32(r.u32())))
	if r.err != nil {
		return Message{}, false
	}
	if d.messages == nil || flags&1 == 0 || !d.inTxn || prefix != d.prefix {
		d.onSkip(SkippedMessage)
		return Message{}, false
	}
	ev, err := d.messages.Event(content, route.Meta{LSN: walStart, CommitLSN: d.commitLSN, CommitTime: d.commitAt})
	return Message{Kind: KindEvent, LSN: walStart, Event: ev, Err: err}, true
}

// extraMappers builds the mapper of each of cfg.Outboxes, by table.
func extraMappers(cfg Config) (map[TableName]*route.Mapper, error) {
	extras := make(map[TableName]*route.Mapper, len(cfg.Outboxes))
	for i := range cfg.Outboxes {
		oc := cfg.OutboxConfig(i)
		if oc.Route.Source == "" {
			oc.Route.Source = oc.DefaultSource()
		}
		m, err := route.New(oc.Route)
		if err != nil {
			return nil, fmt.Errorf("outbox %s: %w", oc.Table, err)
		}
		extras[oc.TableName()] = m
	}
	return extras, nil
}
