package outboxrelay

import "errors"

// ErrSlotActive means another process streams from the slot. The relay waits
// and retries: a second instance is a hot standby, not a crash loop.
var ErrSlotActive = errors.New("replication slot is active in another process")

// ConfigError is a problem retrying cannot fix: the server, the table or the
// configuration must change first. Its message names the fix.
type ConfigError struct {
	Problem string
	Fix     string
}

func (e *ConfigError) Error() string {
	if e.Fix == "" {
		return e.Problem
	}
	return e.Problem + "; " + e.Fix
}

// IsConfigError reports whether err needs a human to change something.
func IsConfigError(err error) bool {
	var ce *ConfigError
	return errors.As(err, &ce)
}

// FieldError is a Config field a package refuses. Packages name their own
// fields (they know nothing of flags); cmd/outbox-relay maps Pkg and Field
// to the flag, environment variable or config key the user set.
type FieldError struct {
	Pkg     string // the package whose Config it is: "replication", "sink", "relay"
	Field   string // the field's path in that Config, e.g. "SASL.User"
	Problem string // what is wrong and what to use instead
	// SetBy, when cmd fills it, says how the user sets the field (a flag,
	// its environment variable, its config key); the message then names
	// that instead of the Go field.
	SetBy string
}

func (e *FieldError) Error() string {
	if e.SetBy != "" {
		return e.SetBy + ": " + e.Problem
	}
	return e.Pkg + ".Config." + e.Field + ": " + e.Problem
}

// FieldErrors returns every *FieldError in err's tree (errors.Join and
// wrapping), in order.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *FieldError:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, c := range e.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return out
}
