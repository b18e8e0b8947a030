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
