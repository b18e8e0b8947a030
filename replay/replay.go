package replay

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/route"
	"github.com/outbox-relay/outbox-relay/seal"
	"github.com/outbox-relay/outbox-relay/sink"
)

// Header is set to "true" on every replayed record, so consumers can tell
// a replay from the first delivery.
const Header = "replayed"

// Filter selects the rows to replay: created at or after Since and, when
// Until is not zero, before it; optionally of one aggregate type, one
// aggregate id, or some event ids.
type Filter struct {
	// CreatedAt is the column compared with Since and Until and ordered by.
	CreatedAt     string
	Since, Until  time.Time
	AggregateType string
	AggregateID   string
	IDs           []string
}

// Validate reports what the filter gets wrong.
func (f Filter) Validate() error {
	var errs []error
	if f.CreatedAt == "" {
		errs = append(errs, errors.New("the created-at column is empty: name the column holding each row's creation time"))
	}
	if f.Since.IsZero() {
		errs = append(errs, errors.New("since is required: the start of the window, e.g. 2026-01-02T15:04:05Z"))
	}
	if !f.Until.IsZero() && !f.Until.After(f.Since) {
		errs = append(errs, fmt.Errorf("until %s is not after since %s: the window is empty", f.Until.Format(time.RFC3339), f.Since.Format(time.RFC3339)))
	}
	return errors.Join(errs...)
}

// Relation returns the outbox table's columns as a pgoutput Relation
// message lists them: in attnum order, without dropped or generated
// columns. route.Mapper.Bind resolves them by name.
func Relation(ctx context.Context, conn *pgx.Conn, tn replication.TableName) ([]route.Column, error) {
	rows, err := conn.Query(ctx, `
		SELECT a.attname, a.atttypid::oid
		FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		ORDER BY a.attnum`, tn.Schema, tn.Table)
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s: %w", tn, err)
	}
	var cols []route.Column
	var c route.Column
	if _, err := pgx.ForEachRow(rows, []any{&c.Name, &c.TypeOID}, func() error {
		cols = append(cols, c)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read the columns of %s: %w", tn, err)
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("table %s does not exist (or this role cannot see it): set --table to the outbox table", tn)
	}
	return cols, nil
}

// query is the SELECT for f: every column of cols in order, then the
// created-at column as unix microseconds.
func query(tn replication.TableName, cols []route.Column, routeCols route.Columns, f Filter) (string, []any) {
	var b strings.Builder
	b.WriteString("SELECT ")
	for _, c := range cols {
		b.WriteString(replication.QuoteIdent(c.Name))
		b.WriteString(", ")
	}
	at := replication.QuoteIdent(f.CreatedAt)
	// The window is instants (timestamptz): a timestamp column is read in
	// the session's time zone, as its values were written.
	fmt.Fprintf(&b, "(extract(epoch FROM %s::timestamptz) * 1000000)::bigint FROM %s WHERE %s >= $1::timestamptz", at, tn.SQL(), at)
	args := []any{f.Since}
	add := func(cond string, v any) {
		args = append(args, v)
		fmt.Fprintf(&b, " AND "+cond, len(args))
	}
	if !f.Until.IsZero() {
		add(at+" < $%d::timestamptz", f.Until)
	}
	if f.AggregateType != "" {
		add(replication.QuoteIdent(routeCols.AggregateType)+"::text = $%d", f.AggregateType)
	}
	if f.AggregateID != "" {
		add(replication.QuoteIdent(routeCols.AggregateID)+"::text = $%d", f.AggregateID)
	}
	if len(f.IDs) > 0 {
		add(replication.QuoteIdent(routeCols.ID)+"::text = ANY($%d)", f.IDs)
	}
	fmt.Fprintf(&b, " ORDER BY %s, ctid", at)
	return b.String(), args
}

// Rows reads the window in replay order and calls each with every row
// mapped through cfg's route, in order. The rows are read in the text
// format (the simple protocol), the format the decoder gets from pgoutput,
// so the mapping sees the same bytes as the relay's.
func Rows(ctx context.Context, conn *pgx.Conn, cfg replication.Config, f Filter, each func(ev outboxrelay.Event) error) error {
	if err := f.Validate(); err != nil {
		return err
	}
	if len(cfg.Outboxes) > 0 {
		// Replaying only the first table would leave the others' window
		// unpublished while the command reports success.
		return &outboxrelay.ConfigError{
			Problem: fmt.Sprintf("replay reads one outbox table; the configuration lists %d more under outboxes:", len(cfg.Outboxes)),
			Fix:     "run replay once per table, with a config (or --table and the column flags) naming only that outbox",
		}
	}
	mapper, err := route.New(cfg.Route)
	if err != nil {
		return fmt.Errorf("route config: %w", err)
	}
	tn := cfg.TableName()
	cols, err := Relation(ctx, conn, tn)
	if err != nil {
		return err
	}
	binding, err := mapper.Bind(tn.String(), cols)
	if err != nil {
		return err
	}
	sql, args := query(tn, cols, cfg.Route.Columns, f)
	rows, err := conn.Query(ctx, sql, append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...)
	if err != nil {
		return fmt.Errorf("read the window from %s: %w", tn, err)
	}
	defer rows.Close()
	vals := make([]route.Value, len(cols))
	for n := 1; rows.Next(); n++ {
		raw := rows.RawValues()
		for i := range cols {
			vals[i] = route.Value{}
			if raw[i] != nil {
				vals[i] = route.Value{Kind: route.Text, Data: raw[i]}
			}
		}
		micros, err := strconv.ParseInt(string(raw[len(cols)]), 10, 64)
		if err != nil {
			return fmt.Errorf("read row %d's %s: %q is not a time", n, f.CreatedAt, raw[len(cols)])
		}
		ev, err := binding.Event(vals, route.Meta{CommitTime: time.UnixMicro(micros).UTC()})
		var ue *route.UnmappableError
		if errors.As(err, &ue) {
			return &UnmappableError{Row: n, Reason: ue.Reason}
		}
		if err != nil {
			return err
		}
		ev.Headers = append(ev.Headers, outboxrelay.Header{Key: Header, Value: []byte("true")})
		if err := each(ev); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the window from %s: %w", tn, err)
	}
	return nil
}

// Summary is what a replay sent (or, dry, would send).
type Summary struct {
	Rows   int
	Bytes  int64          // keys, values and headers
	Topics map[string]int // records per topic
}

func (s *Summary) add(ev *outboxrelay.Event) {
	s.Rows++
	if s.Topics == nil {
		s.Topics = map[string]int{}
	}
	s.Topics[ev.Topic]++
	s.Bytes += int64(len(ev.Key) + len(ev.Value))
	for _, h := range ev.Headers {
		s.Bytes += int64(len(h.Key) + len(h.Value))
	}
}

// Plan maps the window without producing: what Publish would send.
func Plan(ctx context.Context, conn *pgx.Conn, cfg replication.Config, f Filter) (Summary, error) {
	var s Summary
	err := Rows(ctx, conn, cfg, f, func(ev outboxrelay.Event) error {
		s.add(&ev)
		return nil
	})
	return s, err
}

// maxInFlight bounds the records produced and not yet acked.
const maxInFlight = 10000

// Publish produces the window to Kafka through a sink built from kafka
// (its Validate applies; StopAtUndeliverable is set, so no record of an
// aggregate passes one Kafka refused), waits for every ack, and closes the
// producer. progress, if not nil, is called after every acked record from
// the producer's goroutine: it must return quickly. A failed record does
// not stop the reading: every record is offered, and the failures come
// back as a *ProduceError with the summary of what was sent. With keys,
// each value is sealed as the relay seals it (--encryption-keys).
func Publish(ctx context.Context, conn *pgx.Conn, cfg replication.Config, kafka sink.Config, f Filter, keys *seal.Keys, progress func(acked int), opts ...sink.Option) (Summary, error) {
	kafka.StopAtUndeliverable = true
	p := &publisher{slots: make(chan struct{}, maxInFlight), progress: progress}
	snk, err := sink.New(kafka, p.ack, opts...)
	if err != nil {
		return Summary{}, fmt.Errorf("kafka config: %w", err)
	}
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	runErr := make(chan error, 1)
	go func() { runErr <- snk.Run(sctx) }()
	var s Summary
	err = Rows(ctx, conn, cfg, f, func(ev outboxrelay.Event) error {
		if keys != nil {
			var err error
			if ev, err = keys.Event(&ev); err != nil {
				return err
			}
		}
		if err := p.produce(ctx, snk, &ev); err != nil {
			return err
		}
		s.add(&ev)
		return nil
	})
	if err == nil {
		err = p.wait(ctx, runErr)
	}
	stop()
	if rerr := <-runErr; err == nil && rerr != nil {
		err = fmt.Errorf("kafka producer: %w", rerr)
	}
	if err == nil {
		err = p.failure()
	}
	return s, err
}

// publisher tracks the records in flight.
type publisher struct {
	slots    chan struct{} // one per record in flight
	progress func(acked int)

	mu     sync.Mutex
	ids    map[uint64]string
	next   uint64
	acked  int
	failed *ProduceError
}

func (p *publisher) produce(ctx context.Context, snk *sink.Sink, ev *outboxrelay.Event) error {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.mu.Lock()
	if p.ids == nil {
		p.ids = map[uint64]string{}
	}
	p.next++
	tok := p.next
	p.ids[tok] = ev.ID
	p.mu.Unlock()
	if err := snk.Produce(ctx, ev, tok); err != nil {
		return fmt.Errorf("produce event %s: %w", ev.ID, err)
	}
	return nil
}

// ack runs on the sink's drain goroutine; it never blocks.
func (p *publisher) ack(tok uint64, err error) {
	p.mu.Lock()
	id := p.ids[tok]
	delete(p.ids, tok)
	p.acked++
	acked := p.acked
	if err != nil {
		if p.failed == nil {
			p.failed = &ProduceError{FirstID: id, First: err}
		}
		p.failed.Failed++
	}
	p.mu.Unlock()
	<-p.slots
	if p.progress != nil {
		p.progress(acked)
	}
}

// wait returns once every produced record has its ack, ctx ends, or the
// producer stops.
func (p *publisher) wait(ctx context.Context, runErr chan error) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if len(p.slots) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-runErr:
			runErr <- err
			if err == nil {
				err = errors.New("stopped before every record was acked")
			}
			return fmt.Errorf("kafka producer: %w", err)
		case <-tick.C:
		}
	}
}

func (p *publisher) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed != nil {
		return p.failed
	}
	return nil
}
