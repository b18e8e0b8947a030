package replication

import (
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/route"
)

// Config configures a Stream. Start from DefaultConfig: Validate refuses
// empty names and a zero status interval rather than guessing them.
type Config struct {
	// ConnString is an ordinary libpq URL or DSN; the stream adds
	// replication=database for its replication connection itself.
	ConnString string
	// Table is schema.table as ParseTable reads it; "public." is assumed
	// when missing.
	Table       string
	Publication string
	Slot        string
	// Route maps outbox rows to records: the outbox's column names, the
	// topic template, the key and the partition column.
	Route route.Config
	// StatusInterval is how often a standby status update is sent, whether or
	// not the server asks. Keep it well under wal_sender_timeout/2.
	StatusInterval time.Duration
	// Create lets the stream create a missing publication and slot.
	Create bool
	// Outboxes are more outbox tables, each with its own routing, streamed
	// through the same publication and slot in commit order; Table and
	// Route are the first outbox. They are matched by name, so a
	// partitioned one needs publish_via_partition_root (preflight checks).
	Outboxes []Outbox
	// MessagePrefix, when set, makes transactional logical decoding
	// messages with this prefix events (route.Messages): the table-less
	// outbox. Table may then be empty: no outbox table at all.
	MessagePrefix string
}

// Outbox is one more outbox table and how its rows become records.
type Outbox struct {
	// Table is schema.table as ParseTable reads it.
	Table string
	Route route.Config
}

// DefaultConfig returns the defaults documented in outbox-relay run --help.
func DefaultConfig() Config {
	return Config{
		Table:          "public.outbox",
		Publication:    "outbox_relay",
		Slot:           "outbox_relay",
		Route:          route.DefaultConfig(),
		StatusInterval: time.Second,
		Create:         true,
	}
}

// Validate reports every field of c the stream refuses, as
// *outboxrelay.FieldError values joined (the route's with Pkg "route").
func (c Config) Validate() error {
	var errs []error
	field := func(name, format string, args ...any) {
		errs = append(errs, &outboxrelay.FieldError{Pkg: "replication", Field: name, Problem: fmt.Sprintf(format, args...)})
	}
	if c.ConnString == "" {
		field("ConnString", "a Postgres URL is required")
	}
	for _, f := range []struct{ name, value string }{{"Publication", c.Publication}, {"Slot", c.Slot}} {
		if f.value == "" {
			field(f.name, "must not be empty")
		}
	}
	switch {
	case c.Table == "" && c.MessagePrefix == "":
		field("Table", "must not be empty (only a table-less outbox, with a message prefix, has none)")
	case c.Table == "" && (len(c.Route.Fields) > 0 || c.Route.TimestampColumn != ""):
		field("Table", "is empty, but columns are placed (fields, timestamp column): logical messages have no columns to place")
	}
	if c.StatusInterval <= 0 {
		field("StatusInterval", "%s: must be positive", c.StatusInterval)
	}
	if c.Table != "" {
		if _, err := ParseTable(c.Table); err != nil {
			field("Table", "%v", err)
		}
	}
	if err := c.Route.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.validateOutboxes()...)
	for _, r := range c.Slot {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			field("Slot", "%q may only contain lower-case letters, digits and underscores", c.Slot)
			break
		}
	}
	return errors.Join(errs...)
}

// validateOutboxes checks the extra outboxes: each a table of its own,
// each routing valid. Their route errors name the outbox's field path.
func (c Config) validateOutboxes() []error {
	var errs []error
	field := func(name, format string, args ...any) {
		errs = append(errs, &outboxrelay.FieldError{Pkg: "replication", Field: name, Problem: fmt.Sprintf(format, args...)})
	}
	if len(c.Outboxes) > 0 && c.Table == "" {
		field("Table", "is empty, but more outboxes are listed: the first outbox goes in Table")
	}
	seen := map[TableName]int{}
	if tn, err := ParseTable(c.Table); c.Table != "" && err == nil {
		seen[tn] = 0
	}
	for i, o := range c.Outboxes {
		name := fmt.Sprintf("Outboxes[%d]", i)
		tn, err := ParseTable(o.Table)
		switch {
		case o.Table == "":
			field(name+".Table", "must not be empty")
		case err != nil:
			field(name+".Table", "%v", err)
		default:
			if prev, dup := seen[tn]; dup {
				field(name+".Table", "%s is already outbox %d; list each table once", tn, prev+1)
			}
			seen[tn] = i + 1
		}
		for _, fe := range outboxrelay.FieldErrors(o.Route.Validate()) {
			field(name+".Route."+fe.Field, "%s", fe.Problem)
		}
	}
	return errs
}

// OutboxConfig is c as if outbox i of Outboxes were the only one: its
// table and routing, c's connection, publication and slot.
func (c Config) OutboxConfig(i int) Config {
	oc := c
	oc.Table, oc.Route, oc.Outboxes, oc.MessagePrefix = c.Outboxes[i].Table, c.Outboxes[i].Route, nil, ""
	return oc
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

// DefaultSource is the CloudEvents source when Route.Source is empty: the
// database ConnString names and the table, /<database>/<schema>/<table>.
func (c Config) DefaultSource() string {
	tn := c.TableName()
	return route.DeriveSource(c.database(), tn.Schema, tn.Table)
}

// MessageSource is the CloudEvents source of logical messages when
// Route.Source is empty: /<database>/message/<prefix>.
func (c Config) MessageSource() string {
	return route.DeriveSource(c.database(), "message", c.MessagePrefix)
}

func (c Config) database() string {
	if pc, err := pgconn.ParseConfig(c.ConnString); err == nil {
		return pc.Database
	}
	return ""
}

// TableLess reports whether the outbox is logical messages only.
func (c Config) TableLess() bool { return c.Table == "" }
