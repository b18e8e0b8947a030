package replay

import (
	"fmt"
	"strings"
)

// ProduceError reports the events Kafka did not take. Events are sent in
// order, so those of the same aggregate after a failed one may have been
// sent: replay again (consumers deduplicate on the id).
type ProduceError struct {
	Failed int
	// First names the first failed event and why.
	FirstID string
	First   error
}

func (e *ProduceError) Error() string {
	return fmt.Sprintf("%d event(s) were not acked by Kafka (first: event %s: %v); fix the cause and replay the same window again: consumers deduplicate on the id",
		e.Failed, e.FirstID, e.First)
}

func (e *ProduceError) Unwrap() error { return e.First }

// UnmappableError is a row the relay's mapping refuses (a NULL id or
// payload, a topic Kafka would refuse): replay stops before producing it.
type UnmappableError struct {
	Row    int
	Reason string
}

func (e *UnmappableError) Error() string {
	return fmt.Sprintf("row %d of the window cannot become a record: %s; narrow the window (--since/--until/--id) to leave it out", e.Row, strings.TrimSpace(e.Reason))
}
