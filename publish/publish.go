package publish

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outbox-relay/outbox-relay/route"
)

// Tx is what Insert and Message need of the application's transaction;
// pgx.Tx has it (and so do *pgx.Conn and *pgxpool.Pool, which would write
// the event in a transaction of its own: use them only when that is
// what you mean).
type Tx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Event is one event to publish.
type Event struct {
	// ID is the event id; empty means a new one: the table's column
	// default for Insert (gen_random_uuid() in testdata/outbox.sql), a
	// random UUID for Message.
	ID            string
	AggregateType string
	AggregateID   string
	EventType     string
	// Payload is the event's JSON (a jsonb column's text).
	Payload json.RawMessage
	// Headers become Kafka record headers (the table's headers column,
	// e.g. a W3C traceparent); nil writes NULL.
	Headers map[string]string
}

func (ev *Event) validate() error {
	for _, f := range []struct{ name, v string }{
		{"AggregateType", ev.AggregateType}, {"AggregateID", ev.AggregateID}, {"EventType", ev.EventType},
	} {
		if f.v == "" {
			return fieldError("Event."+f.name, "is empty", "the relay routes and keys by it; set it")
		}
	}
	if !json.Valid(ev.Payload) {
		return fmt.Errorf("publish: Event.Payload: %w; pass JSON (json.Marshal the value)", ErrInvalidPayload)
	}
	return nil
}

// Table is an outbox table as the relay reads it.
type Table struct {
	// Name is the table, a name or schema.name as written (no case
	// folding); default "outbox" (the relay's --table public.outbox).
	Name string
	// Columns are the relay's column names (--id-column and friends);
	// zero value: route.DefaultColumns(), testdata/outbox.sql.
	Columns route.Columns
}

// Insert writes ev as a row of t in tx and returns its id (the one given,
// or the column default's). It commits nothing: the row exists, and the
// relay sends it, when tx commits.
func (t Table) Insert(ctx context.Context, tx Tx, ev Event) (string, error) {
	if err := ev.validate(); err != nil {
		return "", err
	}
	sql, args, err := t.insert(ev)
	if err != nil {
		return "", err
	}
	var id string
	if err := tx.QueryRow(ctx, sql, args...).Scan(&id); err != nil {
		return "", fmt.Errorf("insert the event into the outbox %s: %w", t.name(), err)
	}
	return id, nil
}

func (t Table) name() string {
	if t.Name == "" {
		return "outbox"
	}
	return t.Name
}

// insert builds the statement: only the columns ev sets, so the table's
// defaults (id, created_at) apply to the rest.
func (t Table) insert(ev Event) (string, []any, error) {
	parts := strings.Split(t.name(), ".")
	if len(parts) > 2 || slicesHasEmpty(parts) {
		return "", nil, fieldError("Table.Name", fmt.Sprintf("is %q", t.Name), "use a name or schema.name")
	}
	cols := t.Columns
	if cols == (route.Columns{}) {
		cols = route.DefaultColumns()
	}
	names := []string{cols.AggregateType, cols.AggregateID, cols.EventType, cols.Payload}
	args := []any{ev.AggregateType, ev.AggregateID, ev.EventType, string(ev.Payload)}
	if ev.ID != "" {
		names, args = append(names, cols.ID), append(args, ev.ID)
	}
	if ev.Headers != nil {
		if cols.Headers == "" {
			return "", nil, fieldError("Event.Headers", "are set but Table.Columns.Headers is empty", "name the table's headers column")
		}
		h, _ := json.Marshal(ev.Headers)
		names, args = append(names, cols.Headers), append(args, string(h))
	}
	quoted := make([]string, len(names))
	params := make([]string, len(names))
	for i, n := range names {
		if n == "" {
			return "", nil, fieldError("Table.Columns", fmt.Sprintf("leave a column of %v empty", names), "name every column, or leave Columns zero for the defaults")
		}
		quoted[i] = pgx.Identifier{n}.Sanitize()
		params[i] = fmt.Sprintf("$%d", i+1)
	}
	sql := fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s) RETURNING %s::text", pgx.Identifier(parts).Sanitize(),
		strings.Join(quoted, ", "), strings.Join(params, ", "), pgx.Identifier{cols.ID}.Sanitize())
	return sql, args, nil
}

func slicesHasEmpty(ss []string) bool {
	for _, s := range ss {
		if s == "" {
			return true
		}
	}
	return false
}

// Message writes ev in tx as a transactional logical decoding message
// with prefix (the relay's --message-prefix), in the content
// route.Messages reads, and returns its id. Like a row, it reaches the
// relay only when tx commits, in commit order, and never if tx rolls
// back. Needs PostgreSQL 14+ on the relay's side (pgoutput messages).
func Message(ctx context.Context, tx Tx, prefix string, ev Event) (string, error) {
	if prefix == "" {
		return "", fieldError("prefix", "is empty", "pass the relay's --message-prefix")
	}
	if err := ev.validate(); err != nil {
		return "", err
	}
	if ev.ID == "" {
		ev.ID = newUUID()
	}
	content, err := json.Marshal(messageContent{ID: ev.ID, AggregateType: ev.AggregateType, AggregateID: ev.AggregateID,
		EventType: ev.EventType, Payload: ev.Payload, Headers: ev.Headers})
	if err != nil {
		return "", fmt.Errorf("encode the message: %w", err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_logical_emit_message(true, $1::text, $2::text)", prefix, string(content)); err != nil {
		return "", fmt.Errorf("emit the outbox message (prefix %q): %w", prefix, err)
	}
	return ev.ID, nil
}

// messageContent is route.MessageMembers as JSON.
type messageContent struct {
	ID            string            `json:"id"`
	AggregateType string            `json:"aggregate_type"`
	AggregateID   string            `json:"aggregate_id"`
	EventType     string            `json:"event_type"`
	Payload       json.RawMessage   `json:"payload"`
	Headers       map[string]string `json:"headers,omitempty"`
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
