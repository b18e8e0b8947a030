package relay

import (
	"errors"
	"fmt"
	"strings"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/sink"
)

// errKafka marks session failures on the Kafka side, for logs and metrics.
var errKafka = errors.New("kafka")

// errSinkClosed stops the feed when the sink has stopped by itself; the
// sink's own Run reports why.
var errSinkClosed = errors.New("sink stopped")

// classifyDelivery turns a refusal Kafka will repeat forever into an
// UndeliverableError that names the event and the way past it.
func classifyDelivery(err error) error {
	var de *sink.DeliveryError
	if errors.As(err, &de) && !sink.IsRetriable(err) {
		return &UndeliverableError{EventID: de.EventID, LSN: de.LSN, CommitLSN: de.CommitLSN,
			Err: fmt.Errorf("kafka refused it for topic %q: %w (%s)", de.Topic, de.Err, sink.Advice(de.Err))}
	}
	return fmt.Errorf("%w: %w", errKafka, err)
}

// isFatal reports errors a reconnect cannot fix.
func isFatal(err error) bool {
	var ue *UndeliverableError
	return outboxrelay.IsConfigError(err) || errors.As(err, &ue)
}

// UndeliverableError stops the relay at an event it cannot deliver. The
// event stays in the slot; the operator fixes the cause or skips it.
type UndeliverableError struct {
	EventID string
	LSN     outboxrelay.LSN
	// CommitLSN is where the event's transaction commit record starts;
	// the way past an event with no id is to advance the slot beyond it.
	CommitLSN outboxrelay.LSN
	Err       error
}

func (e *UndeliverableError) Error() string {
	if e.EventID == "" {
		return fmt.Sprintf("event (no id) at LSN %s cannot be delivered: %v; the relay stopped without confirming it. "+
			"Fix the cause and restart, or move past it with: %s", e.LSN, e.Err, e.advanceAdvice())
	}
	if len(e.EventID) > maxAdviceID {
		return fmt.Sprintf("event %.80q... (%d bytes) at LSN %s cannot be delivered: %v; the relay stopped without confirming it. "+
			"Fix the cause and restart, or move past it with: %s", e.EventID, len(e.EventID), e.LSN, e.Err, e.advanceAdvice())
	}
	return fmt.Sprintf("event %q at LSN %s cannot be delivered: %v; the relay stopped without confirming it. "+
		"Fix the cause and restart, or move past it with: outbox-relay slot skip --event %s --yes", e.EventID, e.LSN, e.Err, shellQuote(e.EventID))
}

// advanceAdvice is the way past an event slot skip cannot name (it finds
// events by id): advance the slot just past the start of its transaction's
// commit record, which skips that transaction whole, and any earlier one
// still pending; without --yes, slot advance lists them first.
func (e *UndeliverableError) advanceAdvice() string {
	if e.CommitLSN == 0 {
		return "outbox-relay slot peek (note its transaction's commit_end_lsn), then outbox-relay slot advance --to <commit_end_lsn> --yes"
	}
	return fmt.Sprintf("outbox-relay slot advance --to %s --yes (it skips the event's whole transaction; "+
		"run it without --yes first to list every event it would skip)", e.CommitLSN+1)
}

func (e *UndeliverableError) Unwrap() error { return e.Err }

// maxAdviceID bounds an event id pasted into advice: ids come from rows and
// messages, and a longer one is better found with slot peek.
const maxAdviceID = 200

// shellQuote makes s one shell word: the advice is meant to be pasted.
func shellQuote(s string) string {
	safe := s != ""
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.:@/+=", c)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
