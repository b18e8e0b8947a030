package checkpoint

import (
	"fmt"
	"strings"
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
	g := &e.Gap
	fix := fmt.Sprintf("re-publish the missing events from the outbox table, then start once with --accept-gap to go on from %s; see docs/operations.md, 'Gap report'", g.To)
	if since, until, ok := g.Window(); ok {
		fix = fmt.Sprintf("re-publish the outbox rows created from %s to %s (the relay's record was last written at %s; the window starts %s earlier for transactions open then) with `outbox-relay %s --yes` and the relay's connection, table and routing flags, "+
			"and start once with --accept-gap to go on from %s; see docs/operations.md, 'Gap report'",
			since.Format(time.RFC3339), until.Format(time.RFC3339), g.RecordedAt.UTC().Format(time.RFC3339), ReplayMargin, strings.Join(g.ReplayArgs(), " "), g.To)
		if g.Kind != GapSlotMoved {
			fix += "; the gap grows until that start, whose log line prints the window to replay"
		}
	} else if !g.RecordedAt.IsZero() {
		fix = fmt.Sprintf("re-publish the missing events from the outbox table (the relay's record was written at %s: outbox rows created after that are the candidates; `outbox-relay replay --since ...`), then start once with --accept-gap to go on from %s; see docs/operations.md, 'Gap report'",
			g.RecordedAt.UTC().Format(time.RFC3339), g.To)
	}
	return &outboxrelay.ConfigError{Problem: "gap in the event stream: " + g.Describe(), Fix: fix}
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
