package replication

import (
	"context"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// Preparer readies one session before replication starts: it checks the
// server, creates what is missing and allowed, and reads the slot. The
// stream calls it once, first thing in Run, on Run's goroutine.
type Preparer interface {
	Prepare(ctx context.Context) (Plan, error)
}

// Plan is what a session streams with.
type Plan struct {
	// Start is the slot's confirmed position: streaming starts there and
	// nothing below it is ever confirmed.
	Start         outboxrelay.LSN
	ServerVersion int
	// Relations are the outbox's relation ids (the table and, when it is
	// partitioned, its partitions), so the decoder knows them by id.
	Relations []uint32
	// Delivered, when above Start, is where the relay's durable record
	// stands: an earlier session had every event of the transactions whose
	// commit record starts below it acked by Kafka, and confirmed them, but
	// the slot moved back (Postgres restarted before it saved its
	// position). The stream drops those transactions' events, as Postgres
	// itself skips a transaction whose commit starts below the slot's
	// position, and passes their commits, so they are confirmed at once
	// instead of produced again.
	Delivered outboxrelay.LSN
	// Lookup decides once about a relation not among Relations (a
	// partition attached since); nil when the outbox has no partitions.
	Lookup OutboxMatcher
	// Record runs on the stream's goroutine before each status update, with
	// the highest position Confirm was given. It returns the position the
	// update may carry (at most want): the durable record must cover a
	// position before Postgres hears of it. An error ends the session.
	Record func(ctx context.Context, want outboxrelay.LSN) (outboxrelay.LSN, error)
	// Close releases what the plan holds; the stream calls it when Run ends.
	Close func()
}
