package route

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// Envelope is how the payload is wrapped in the record.
type Envelope string

const (
	// EnvelopeNone sends the payload as stored.
	EnvelopeNone Envelope = "none"
	// EnvelopeCloudEvents is the CloudEvents 1.0 Kafka protocol binding in
	// binary mode: the attributes are ce_* headers, the payload the value.
	EnvelopeCloudEvents Envelope = "cloudevents"
	// EnvelopeJSON wraps the payload in one JSON document with the event's
	// fields (JSONEnvelopeVersion says which layout).
	EnvelopeJSON Envelope = "json"
)

// JSONEnvelopeVersion is the "version" member of the JSON envelope: the
// layout of the document, raised when a member changes meaning, so a
// consumer can refuse a layout it does not know.
const JSONEnvelopeVersion = 1

// CloudEventsDataSchema is the envelope field name whose placed column
// becomes ce_dataschema (for example --field version:envelope:dataschema).
const CloudEventsDataSchema = "dataschema"

// Type OIDs the mapping distinguishes (pg_type.oid, fixed since 8.x).
const (
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidJSON        = 114
	oidTimestamp   = 1114
	oidTimestampTZ = 1184
	oidJSONB       = 3802
)

func (c Config) envelope() Envelope {
	if c.Envelope == "" {
		return EnvelopeNone
	}
	return c.Envelope
}

func (c Config) validateEnvelope() []error {
	var errs []error
	switch c.envelope() {
	case EnvelopeNone, EnvelopeCloudEvents, EnvelopeJSON:
	default:
		errs = append(errs, &outboxrelay.FieldError{Pkg: "route", Field: "Envelope",
			Problem: fmt.Sprintf("%q: use none, cloudevents or json", string(c.Envelope))})
	}
	if c.Source != "" {
		if _, err := url.Parse(c.Source); err != nil {
			errs = append(errs, &outboxrelay.FieldError{Pkg: "route", Field: "Source",
				Problem: fmt.Sprintf("%q is not a URI-reference, which CloudEvents requires of ce_source: %v", c.Source, err)})
		}
	}
	return errs
}

// DeriveSource is the default ce_source: the database and the table as a
// relative URI-reference, each part escaped, e.g. /app/public/outbox.
func DeriveSource(database, schema, table string) string {
	return "/" + url.PathEscape(database) + "/" + url.PathEscape(schema) + "/" + url.PathEscape(table)
}

// contentType is the media type of the payload column, for content-type.
func contentType(payloadOID uint32) string {
	switch payloadOID {
	case oidJSON, oidJSONB:
		return "application/json"
	case oidBytea:
		return "application/octet-stream"
	}
	return "text/plain; charset=utf-8"
}

// cloudEvents adds the CloudEvents binary-mode headers to ev. Attribute
// values come from the row; ev.Value stays the payload.
func (b *Binding) cloudEvents(ev *outboxrelay.Event, vals []Value, at time.Time) error {
	evType := vals[b.headerCols[0].col]
	if evType.Kind != Text || len(evType.Data) == 0 {
		return fmt.Errorf("CloudEvents requires a type, and the event type (column %q) is NULL or empty", b.m.cfg.Columns.EventType)
	}
	hs := append(ev.Headers,
		outboxrelay.Header{Key: "ce_specversion", Value: []byte("1.0")},
		outboxrelay.Header{Key: "ce_id", Value: []byte(ev.ID)},
		outboxrelay.Header{Key: "ce_source", Value: []byte(b.source)},
		outboxrelay.Header{Key: "ce_type", Value: []byte(string(evType.Data))},
		outboxrelay.Header{Key: "ce_time", Value: []byte(at.UTC().Format(time.RFC3339Nano))},
	)
	if subject := vals[b.headerCols[2].col]; subject.Kind == Text {
		hs = append(hs, outboxrelay.Header{Key: "ce_subject", Value: []byte(string(subject.Data))})
	}
	if ev.Value != nil {
		hs = append(hs, outboxrelay.Header{Key: "content-type", Value: []byte(contentType(b.payloadOID))})
	}
	for _, f := range b.fields {
		v := vals[f.col]
		if f.Place != PlaceEnvelope || v.Kind != Text {
			continue
		}
		if f.Name() == CloudEventsDataSchema {
			if u, err := url.Parse(string(v.Data)); err != nil || !u.IsAbs() {
				return fmt.Errorf("ce_dataschema %.80q (column %q) is not an absolute URI, which CloudEvents requires: store one, e.g. https://schemas.example.com/order/v3", v.Data, f.Column)
			}
		}
		hs = append(hs, outboxrelay.Header{Key: "ce_" + f.Name(), Value: []byte(string(v.Data))})
	}
	ev.Headers = hs
	return nil
}

// jsonEnvelope replaces ev.Value with the JSON envelope around it. A
// tombstone (nil Value) stays one: compaction needs the null.
func (b *Binding) jsonEnvelope(ev *outboxrelay.Event, vals []Value, at time.Time) error {
	if ev.Value == nil {
		return nil
	}
	doc := map[string]any{
		"id":             ev.ID,
		"type":           textOrNil(vals[b.headerCols[0].col]),
		"aggregate_type": textOrNil(vals[b.headerCols[1].col]),
		"aggregate_id":   textOrNil(vals[b.headerCols[2].col]),
		"occurred_at":    at.UTC().Format(time.RFC3339Nano),
		"version":        JSONEnvelopeVersion,
		"payload":        jsonValue(ev.Value, b.payloadOID),
	}
	for _, f := range b.fields {
		if f.Place == PlaceEnvelope {
			v := vals[f.col]
			if v.Kind != Text {
				doc[f.Name()] = nil
				continue
			}
			data := v.Data
			if f.typeOID == oidBytea {
				decoded, err := decodeBytea(data)
				if err != nil {
					return fmt.Errorf("envelope field %q: %w", f.Name(), err)
				}
				data = decoded
			}
			doc[f.Name()] = jsonValue(data, f.typeOID)
		}
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("build the JSON envelope: %w", err)
	}
	ev.Value = out
	return nil
}

func textOrNil(v Value) any {
	if v.Kind != Text {
		return nil
	}
	return string(v.Data)
}

// jsonValue is a column's value as a JSON member: json and jsonb as they
// are, integers as numbers, bytea (already decoded) as base64, anything
// else as its text.
func jsonValue(data []byte, oid uint32) any {
	switch oid {
	case oidJSON, oidJSONB:
		if json.Valid(data) {
			return json.RawMessage(data)
		}
	case oidInt2, oidInt4, oidInt8:
		if _, err := strconv.ParseInt(string(data), 10, 64); err == nil {
			return json.RawMessage(data)
		}
	case oidBytea:
		return base64.StdEncoding.EncodeToString(data)
	}
	return string(data)
}

// timestampLayouts are the text forms of timestamptz and timestamp under
// DateStyle ISO, which the replication connection sets.
var timestampLayouts = []string{
	"2006-01-02 15:04:05.999999999Z07",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z07:00:00",
	"2006-01-02 15:04:05.999999999",
}

// parseTimestamp reads a timestamp column's value: timestamptz or timestamp
// (taken as UTC) text, or bigint epoch milliseconds.
func parseTimestamp(data []byte, oid uint32) (time.Time, error) {
	if oid == oidInt8 || oid == oidInt4 {
		ms, err := strconv.ParseInt(string(data), 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("timestamp %.40q is not epoch milliseconds", data)
		}
		return inKafkaRange(time.UnixMilli(ms).UTC(), data)
	}
	for _, layout := range timestampLayouts {
		if t, err := time.Parse(layout, string(data)); err == nil {
			return inKafkaRange(t, data)
		}
	}
	return time.Time{}, fmt.Errorf("timestamp %.40q is not a Postgres ISO timestamp (infinity and BC dates have no Kafka timestamp)", data)
}

// inKafkaRange refuses a record timestamp the producer cannot encode
// (before 1970) or that time-based retention would treat absurdly (after
// 9999): epoch seconds in a bigint column read as milliseconds land in
// January 1970, and the records would expire at once.
func inKafkaRange(t time.Time, data []byte) (time.Time, error) {
	if t.Before(time.Unix(0, 0)) || t.Year() > 9999 {
		return time.Time{}, fmt.Errorf("timestamp %.40q is %s, outside 1970-9999 (a bigint column holds epoch milliseconds)", data, t.Format(time.RFC3339))
	}
	return t, nil
}
