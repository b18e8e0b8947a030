package checkpoint

import (
	"fmt"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// Gap kinds.
const (
	GapSlotMissing = "slot_missing"
	GapSlotLost    = "slot_lost"
	GapSlotMoved   = "slot_moved"
)

// Gap is a stretch of WAL whose events the relay will never receive from
// the slot: they were not sent to Kafka and will not be.
type Gap struct {
	Kind string
	Slot string
	// From is the last position the relay is known to have confirmed; To is
	// where the slot (or a new one) resumes. Events committed in between are
	// missing from Kafka.
	From, To outboxrelay.LSN
	// RecordedAt is when the relay's record was last written; rows created
	// after it are the candidates to re-publish.
	RecordedAt time.Time
	// DetectedAt is the server's time when the gap was found; zero when
	// unknown.
	DetectedAt time.Time
}

// ReplayMargin is how long before the record's last write the replay
// window starts. A row's created_at defaults to now(), the start of its
// transaction, and the record is written up to a status interval after
// a commit it covers: a transaction that was open that long before the
// record's write has rows older than it. Replaying a few rows Kafka has
// costs only duplicates, which consumers drop by id.
const ReplayMargin = 5 * time.Minute

// replayTail is how far past DetectedAt the window ends: the slot a
// missing or lost one is replaced with is created a moment after.
const replayTail = time.Minute

// Window is the span of creation times (created_at) of the outbox rows the
// gap may hold: from ReplayMargin before the record's last write to a
// minute after the gap was found, whole seconds, UTC. ok is false when
// either end is unknown. For a missing or lost slot the gap grows until the
// relay starts with --accept-gap (a new slot starts there), so the window
// printed when that start accepts the gap is the one to replay.
func (g *Gap) Window() (since, until time.Time, ok bool) {
	if g.RecordedAt.IsZero() || g.DetectedAt.IsZero() {
		return time.Time{}, time.Time{}, false
	}
	since = g.RecordedAt.Add(-ReplayMargin).UTC().Truncate(time.Second)
	until = g.DetectedAt.Add(replayTail + time.Second).UTC().Truncate(time.Second)
	return since, until, true
}

// ReplayArgs are the arguments of `outbox-relay replay` that re-publish
// Window, without the connection, table and routing flags (cmd adds the
// relay's own) and without --yes; nil when the window is unknown.
func (g *Gap) ReplayArgs() []string {
	since, until, ok := g.Window()
	if !ok {
		return nil
	}
	return []string{"replay", "--since", since.Format(time.RFC3339), "--until", until.Format(time.RFC3339)}
}

// DetectGap compares the slot with the relay's record. Read the slot first
// and the record second: the record only rises and is raised before every
// confirmation, so any position seen in the slot is then covered by the
// record read after it. Moves back (a Postgres crash loses the slot's
// unflushed position) are not gaps: they only resend.
func DetectGap(name string, slot SlotInfo, rec Record, hasRecord bool, currentWAL outboxrelay.LSN) *Gap {
	switch {
	case slot.Exists && slot.WALStatus == "lost":
		from := slot.ConfirmedFlush
		if hasRecord && rec.LSN < from {
			from = rec.LSN
		}
		return &Gap{Kind: GapSlotLost, Slot: name, From: from, To: currentWAL, RecordedAt: rec.UpdatedAt}
	case !hasRecord:
		return nil
	case !slot.Exists:
		return &Gap{Kind: GapSlotMissing, Slot: name, From: rec.LSN, To: currentWAL, RecordedAt: rec.UpdatedAt}
	case slot.ConfirmedFlush > rec.LSN:
		return &Gap{Kind: GapSlotMoved, Slot: name, From: rec.LSN, To: slot.ConfirmedFlush, RecordedAt: rec.UpdatedAt}
	}
	return nil
}

// Describe says what happened in a sentence.
func (g *Gap) Describe() string {
	switch g.Kind {
	case GapSlotMissing:
		return fmt.Sprintf("replication slot %q is missing but the relay had confirmed it up to %s: it was dropped, or Postgres failed over to a server without it; a new slot starts at %s, so events committed from %s to %s would never be sent",
			g.Slot, g.From, g.To, g.From, g.To)
	case GapSlotLost:
		return fmt.Sprintf("replication slot %q has wal_status 'lost': Postgres removed WAL it still needed (max_slot_wal_keep_size), so events committed from %s to %s can no longer be decoded",
			g.Slot, g.From, g.To)
	default:
		return fmt.Sprintf("replication slot %q is at %s, past the relay's record %s, and neither the relay nor `outbox-relay slot advance/skip` moved it there: it was recreated or advanced behind the relay's back, so events committed from %s to %s were skipped",
			g.Slot, g.To, g.From, g.From, g.To)
	}
}
