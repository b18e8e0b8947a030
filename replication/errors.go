package replication

import (
	"errors"
	"fmt"
)

// SQLSTATEs the package tells apart.
const (
	sqlstateUndefinedObject       = "42704"
	sqlstateDuplicateObject       = "42710"
	sqlstateInsufficientPrivilege = "42501"
	sqlstateObjectInUse           = "55006" // "replication slot ... is active for PID n"
	sqlstateUniqueViolation       = "23505"
)

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

func configErr(problem, fixFormat string, args ...any) error {
	return &ConfigError{Problem: problem, Fix: fmt.Sprintf(fixFormat, args...)}
}

// IsConfigError reports whether err needs a human to change something.
func IsConfigError(err error) bool {
	var ce *ConfigError
	return errors.As(err, &ce)
}

// UnmappableError means an outbox row cannot become a Kafka record as
// configured (a NULL id, a NULL payload, a topic name Kafka would refuse).
// The row is in the WAL and stays there until an operator decides.
type UnmappableError struct {
	Reason string
}

func (e *UnmappableError) Error() string { return e.Reason }
