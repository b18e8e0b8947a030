package replication

import (
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/outbox-relay/outbox-relay/route"
)

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
		StatusInterval: 5 * time.Second,
		Create:         true,
	}
}

func (c Config) Validate() error {
	var errs []error
	if c.ConnString == "" {
		errs = append(errs, errors.New("a Postgres URL is required (--pg-url)"))
	}
	for name, v := range map[string]string{"table": c.Table, "publication": c.Publication, "slot": c.Slot} {
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
	if err := c.Route.Validate(); err != nil {
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
