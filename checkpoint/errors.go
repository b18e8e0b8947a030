package checkpoint

import (
	"fmt"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// GapError stops the relay at start. It unwraps to a
// *outboxrelay.ConfigError so the relay treats it as fatal.
type GapError struct {
	Gap Gap
}

func (e *GapError) Error() string { return e.config().Error() }

func (e *GapError) Unwrap() error { return e.config() }

func (e *GapError) config() *outboxrelay.ConfigError {
	since := ""
	if !e.Gap.RecordedAt.IsZero() {
		since = fmt.Sprintf(" (the relay's record was written at %s: outbox rows created after that are the candidates)", e.Gap.RecordedAt.UTC().Format(time.RFC3339))
	}
	return &outboxrelay.ConfigError{
		Problem: "gap in the event stream: " + e.Gap.Describe(),
		Fix: fmt.Sprintf("re-publish the missing events from the outbox table%s, then start once with --accept-gap to go on from %s; see docs/operations.md, 'Gap report'",
			since, e.Gap.To),
	}
}
