package route

import (
	"errors"

	outboxrelay "github.com/outbox-relay/outbox-relay"
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

// PartitionByKey makes the partition follow the message key.
const PartitionByKey = "key"

// Config says how a row becomes a record. Zero fields are errors; start
// from DefaultConfig.
type Config struct {
	Columns Columns
	// Topic is a template: {name} is replaced by the row's value of that
	// column (logical names like {aggregate_type} follow Columns).
	Topic string
	// KeyColumn is the message key; the event id by default.
	KeyColumn string
	// PartitionBy is the column whose value is hashed to pick the
	// partition; PartitionByKey hashes the message key.
	PartitionBy string
}

// DefaultConfig returns the defaults documented in outbox-relay run --help.
func DefaultConfig() Config {
	return Config{
		Columns:     DefaultColumns(),
		Topic:       "outbox.event.{aggregate_type}",
		KeyColumn:   "id",
		PartitionBy: "aggregate_id",
	}
}

// Validate reports every field New would refuse, joined.
func (c Config) Validate() error {
	var errs []error
	for _, f := range []struct{ field, value string }{
		{"Columns.ID", c.Columns.ID}, {"Columns.AggregateType", c.Columns.AggregateType},
		{"Columns.AggregateID", c.Columns.AggregateID}, {"Columns.EventType", c.Columns.EventType},
		{"Columns.Payload", c.Columns.Payload}, {"Topic", c.Topic},
		{"KeyColumn", c.KeyColumn}, {"PartitionBy", c.PartitionBy},
	} {
		if f.value == "" {
			errs = append(errs, &outboxrelay.FieldError{Pkg: "route", Field: f.field, Problem: "must not be empty"})
		}
	}
	if _, err := parseTemplate(c.Topic); err != nil {
		errs = append(errs, &outboxrelay.FieldError{Pkg: "route", Field: "Topic", Problem: err.Error()})
	}
	return errors.Join(errs...)
}
