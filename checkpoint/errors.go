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

// HaltError is a stop at a change that may have kept events out of the
// slot (the outbox left its publication: pgoutput skips its rows at decode
// time). The Keeper's Record hook keeps it in the durable record, so every
// later start, in this process or another, refuses until an operator has
// re-published the rows and starts once with --accept-gap. It unwraps to
// its *outboxrelay.ConfigError, so the relay treats it as fatal.
type HaltError struct {
	Err *outboxrelay.ConfigError
}

func (e *HaltError) Error() string { return e.Err.Error() }

func (e *HaltError) Unwrap() error { return e.Err }
