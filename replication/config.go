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
	for _, f := range []struct{ name, value string }{{"Table", c.Table}, {"Publication", c.Publication}, {"Slot", c.Slot}} {
		if f.value == "" {
			field(f.name, "must not be empty")
		}
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
	for _, r := range c.Slot {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			field("Slot", "%q may only contain lower-case letters, digits and underscores", c.Slot)
			break
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

// DefaultSource is the CloudEvents source when Route.Source is empty: the
// database ConnString names and the table, /<database>/<schema>/<table>.
func (c Config) DefaultSource() string {
	var db string
	if pc, err := pgconn.ParseConfig(c.ConnString); err == nil {
		db = pc.Database
	}
	tn := c.TableName()
	return route.DeriveSource(db, tn.Schema, tn.Table)
}
