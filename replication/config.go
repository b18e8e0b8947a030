package replication

import (
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
)

// Columns names the outbox table's columns. Users with an existing table
// (Debezium's aggregatetype, aggregateid, type, ...) rename them here.
type Columns struct {
	ID            string
	AggregateType string
	AggregateID   string
	EventType     string
	Payload       string
	// Headers is a jsonb/json column whose string entries become record
	// headers (e.g. a W3C traceparent). Empty means the table has none.
	Headers string
}

// DefaultColumns matches testdata/outbox.sql.
func DefaultColumns() Columns {
	return Columns{
		ID:            "id",
		AggregateType: "aggregate_type",
		AggregateID:   "aggregate_id",
		EventType:     "event_type",
		Payload:       "payload",
		Headers:       "headers",
	}
}

// logical maps the names used in templates and in KeyColumn/PartitionBy to
// the configured column names, so the defaults keep working after a rename.
func (c Columns) logical() map[string]string {
	return map[string]string{
		"id":             c.ID,
		"aggregate_type": c.AggregateType,
		"aggregate_id":   c.AggregateID,
		"event_type":     c.EventType,
		"payload":        c.Payload,
		"headers":        c.Headers,
	}
}

// Required are the columns every outbox row must have.
func (c Columns) Required() []string {
	return []string{c.ID, c.AggregateType, c.AggregateID, c.EventType, c.Payload}
}

// Resolve returns the table column a logical name or a column name refers to.
func (c Columns) Resolve(name string) string {
	if col, ok := c.logical()[name]; ok && col != "" {
		return col
	}
	return name
}

// Routing turns a row into a record.
type Routing struct {
	// Topic is a template: {name} is replaced by the row's value of that
	// column (logical names like {aggregate_type} follow Columns).
	Topic string
	// KeyColumn is the message key; the event id by default.
	KeyColumn string
	// PartitionBy is the column whose value is hashed to pick the
	// partition; "key" hashes the message key.
	PartitionBy string
}

// PartitionByKey makes the partition follow the message key.
const PartitionByKey = "key"

// Config configures a Stream. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// ConnString is an ordinary libpq URL or DSN; the stream adds
	// replication=database for its replication connection itself.
	ConnString string
	// Table is schema.table as ParseTable reads it; "public." is assumed
	// when missing.
	Table       string
	Publication string
	Slot        string
	Columns     Columns
	Routing     Routing
	// StatusInterval is how often a standby status update is sent, whether or
	// not the server asks. Keep it well under wal_sender_timeout/2.
	StatusInterval time.Duration
	// Create lets the stream create a missing publication and slot.
	Create bool
}

// DefaultConfig returns the defaults documented in outbox-relay run --help.
func DefaultConfig() Config {
	return Config{
		Table:          "public.outbox",
		Publication:    "outbox_relay",
		Slot:           "outbox_relay",
		Columns:        DefaultColumns(),
		Routing:        Routing{Topic: "outbox.event.{aggregate_type}", KeyColumn: "id", PartitionBy: "aggregate_id"},
		StatusInterval: 5 * time.Second,
		Create:         true,
	}
}

func (c Config) Validate() error {
	var errs []error
	if c.ConnString == "" {
		errs = append(errs, errors.New("a Postgres URL is required (--pg-url)"))
	}
	for name, v := range map[string]string{
		"table": c.Table, "publication": c.Publication, "slot": c.Slot,
		"id column": c.Columns.ID, "aggregate type column": c.Columns.AggregateType,
		"aggregate id column": c.Columns.AggregateID, "event type column": c.Columns.EventType,
		"payload column": c.Columns.Payload, "topic template": c.Routing.Topic,
		"key column": c.Routing.KeyColumn, "partition-by column": c.Routing.PartitionBy,
	} {
		if v == "" {
			errs = append(errs, fmt.Errorf("the %s must not be empty", name))
		}
	}
	if c.StatusInterval <= 0 {
		errs = append(errs, errors.New("the status interval must be positive"))
	}
	if c.Table != "" {
		if _, err := ParseTable(c.Table); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := parseTemplate(c.Routing.Topic); err != nil {
		errs = append(errs, err)
	}
	for _, name := range []string{c.Slot} {
		for _, r := range name {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
				errs = append(errs, fmt.Errorf("slot name %q may only contain lower-case letters, digits and underscores", name))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// TableName is the parsed Table; validate has refused one that does not
// parse, so the zero value only reaches code that validate did not guard.
func (c Config) TableName() TableName {
	t, _ := ParseTable(c.Table)
	return t
}

// Option adjusts a Stream beyond its Config.
type Option func(*Stream)

// WithLogger sets the logger; the default discards.
func WithLogger(l zerolog.Logger) Option {
	return func(s *Stream) { s.log = l.With().Str("component", "replication").Logger() }
}
