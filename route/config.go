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
	// TombstoneOnEmptyPayload makes a NULL payload a tombstone (a record
	// with a null value, same key and headers) instead of an unmappable
	// row: Debezium's route.tombstone.on.empty.payload, for compacted
	// topics.
	TombstoneOnEmptyPayload bool
	// Fields places extra columns in every record: as headers or as
	// envelope fields (Debezium's table.fields.additional.placement).
	Fields []Field
	// TimestampColumn is a timestamptz, timestamp or bigint (epoch
	// milliseconds) column whose value becomes the record's timestamp;
	// empty means the transaction's commit time. A NULL value falls back
	// to the commit time.
	TimestampColumn string
	// TimestampOptional lets a table lack TimestampColumn (the commit
	// time is used): the debezium preset names Debezium's optional
	// "timestamp" column this way.
	TimestampOptional bool
	// Envelope wraps the payload: EnvelopeNone (the payload as stored),
	// EnvelopeCloudEvents or EnvelopeJSON.
	Envelope Envelope
	// Source is the CloudEvents source attribute (ce_source); empty means
	// one derived from the database and table (replication fills it).
	Source string
}

// DefaultConfig returns the defaults documented in outbox-relay run --help.
func DefaultConfig() Config {
	return Config{
		Columns:     DefaultColumns(),
		Topic:       "outbox.event.{aggregate_type}",
		KeyColumn:   "id",
		PartitionBy: "aggregate_id",
		Envelope:    EnvelopeNone,
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
	errs = append(errs, c.validateEnvelope()...)
	errs = append(errs, c.validateFields()...)
	return errors.Join(errs...)
}
