package route

import (
	"fmt"
	"strings"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// Placement is where a placed column goes in the record.
type Placement string

const (
	// PlaceHeader makes the column a record header.
	PlaceHeader Placement = "header"
	// PlaceEnvelope makes the column a field of the envelope: a top-level
	// member of the JSON envelope, a CloudEvents extension attribute.
	PlaceEnvelope Placement = "envelope"
)

// Field is one placed column: COLUMN:header|envelope[:ALIAS].
type Field struct {
	Column string
	Place  Placement
	// Alias names the header or envelope field; empty means Column.
	Alias string
}

// Name is the header or envelope field the column becomes.
func (f Field) Name() string {
	if f.Alias != "" {
		return f.Alias
	}
	return f.Column
}

// String is the field as ParseField reads it.
func (f Field) String() string {
	if f.Alias == "" {
		return f.Column + ":" + string(f.Place)
	}
	return f.Column + ":" + string(f.Place) + ":" + f.Alias
}

// ParseField reads COLUMN:header[:ALIAS] or COLUMN:envelope[:ALIAS].
func ParseField(spec string) (Field, error) {
	parts := strings.Split(spec, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" {
		return Field{}, fmt.Errorf("field %q: write COLUMN:header[:ALIAS] or COLUMN:envelope[:ALIAS]", spec)
	}
	f := Field{Column: parts[0], Place: Placement(parts[1])}
	if f.Place != PlaceHeader && f.Place != PlaceEnvelope {
		return Field{}, fmt.Errorf("field %q: placement %q is not header or envelope", spec, parts[1])
	}
	if len(parts) == 3 {
		if parts[2] == "" {
			return Field{}, fmt.Errorf("field %q: the alias after the second ':' is empty; drop the ':' to keep the column's name", spec)
		}
		f.Alias = parts[2]
	}
	return f, nil
}

// jsonEnvelopeKeys are the JSON envelope's own members; a placed field may
// not take their names.
var jsonEnvelopeKeys = map[string]bool{
	"id": true, "type": true, "aggregate_type": true, "aggregate_id": true,
	"occurred_at": true, "version": true, "payload": true,
}

// ceCoreAttributes are the CloudEvents attributes the relay sets itself;
// dataschema is the one core attribute a placed field may supply.
var ceCoreAttributes = map[string]bool{
	"specversion": true, "id": true, "source": true, "type": true, "time": true,
	"subject": true, "datacontenttype": true, "data": true,
}

// validateFields refuses placements a record could not carry unambiguously.
func (c Config) validateFields() []error {
	var errs []error
	bad := func(f Field, format string, args ...any) {
		errs = append(errs, &outboxrelay.FieldError{Pkg: "route", Field: "Fields",
			Problem: fmt.Sprintf("%q: ", f.String()) + fmt.Sprintf(format, args...)})
	}
	seen := map[string]bool{}
	for _, f := range c.Fields {
		name := f.Name()
		switch {
		case f.Column == "":
			bad(f, "the column is empty")
			continue
		case f.Place != PlaceHeader && f.Place != PlaceEnvelope:
			bad(f, "placement %q is not header or envelope", f.Place)
			continue
		case seen[string(f.Place)+":"+name]:
			bad(f, "%s %q is placed twice; give one of them another alias", f.Place, name)
		}
		seen[string(f.Place)+":"+name] = true
		if f.Place == PlaceHeader {
			if problem := c.headerNameProblem(name); problem != "" {
				bad(f, "%s", problem)
			}
			continue
		}
		if problem := c.envelopeNameProblem(name); problem != "" {
			bad(f, "%s", problem)
		}
	}
	return errs
}

func (c Config) headerNameProblem(name string) string {
	switch {
	case reservedHeaders[name]:
		return fmt.Sprintf("header %q is set by the relay from the outbox's columns; give the column another alias", name)
	case c.envelope() == EnvelopeCloudEvents && (strings.HasPrefix(name, "ce_") || name == "content-type"):
		return fmt.Sprintf("header %q is CloudEvents' own with --envelope cloudevents; place the column in the envelope (COLUMN:envelope:NAME) to make it an extension attribute", name)
	}
	return ""
}

func (c Config) envelopeNameProblem(name string) string {
	switch c.envelope() {
	case EnvelopeJSON:
		if jsonEnvelopeKeys[name] {
			return fmt.Sprintf("%q is a member of the JSON envelope itself; give the column another alias", name)
		}
	case EnvelopeCloudEvents:
		if ceCoreAttributes[name] {
			return fmt.Sprintf("%q is a CloudEvents attribute the relay sets; give the column another alias", name)
		}
		if !validCEName(name) {
			return fmt.Sprintf("%q is not a CloudEvents attribute name (1 to 20 lower-case ASCII letters and digits); give the column an alias like that", name)
		}
	default:
		return "envelope placement needs an envelope: set --envelope json or cloudevents, or place the column as a header"
	}
	return ""
}

// validCEName is the CloudEvents 1.0 attribute naming rule.
func validCEName(name string) bool {
	if name == "" || len(name) > 20 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
