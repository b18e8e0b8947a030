package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/checkpoint"
	"github.com/outbox-relay/outbox-relay/internal/pgerr"
	"github.com/outbox-relay/outbox-relay/replication"
)

// PendingEvent is an outbox row still in the slot: what the next session
// would send.
type PendingEvent struct {
	ID  string
	LSN outboxrelay.LSN
	// CommitLSN is where its transaction's commit record starts, CommitEnd
	// where it ends: advancing the slot to CommitEnd skips the transaction.
	CommitLSN  outboxrelay.LSN
	CommitEnd  outboxrelay.LSN
	CommitTime time.Time
	Topic      string
	Key        string
	// Error says why the row cannot become a record as configured (the
	// relay halts at it); empty for a deliverable event.
	Error string
}

// Peek decodes up to limit pending events (all when limit is 0) with
// pg_logical_slot_peek_binary_changes and the relay's own decoder. It
// consumes nothing: the slot stays where it was. The slot must not be
// streaming (Postgres lets one process use a slot at a time).
func Peek(ctx context.Context, conn *pgx.Conn, cfg replication.Config, limit int) ([]PendingEvent, error) {
	if limit <= 0 {
		evs, _, err := peek(ctx, conn, cfg, nil, 0)
		return evs, err
	}
	// Postgres counts output rows (begin, relation, insert, commit), not
	// events, and stops only at transaction ends: ask for more until enough.
	for n := 4*limit + 16; ; n *= 4 {
		evs, rows, err := peek(ctx, conn, cfg, nil, n)
		if err != nil || len(evs) >= limit || rows < n {
			return evs[:min(limit, len(evs))], err
		}
	}
}

// FindPending peeks until the event with id and the rest of its transaction
// are decoded; found is false when it is not pending.
func FindPending(ctx context.Context, conn *pgx.Conn, cfg replication.Config, id string) (evs []PendingEvent, found bool, err error) {
	for n := 1024; ; n *= 8 {
		evs, rows, err := peek(ctx, conn, cfg, nil, n)
		if err != nil {
			return nil, false, err
		}
		for _, e := range evs {
			if e.ID == id {
				return evs, true, nil
			}
		}
		if rows < n {
			return evs, false, nil
		}
	}
}

// PeekUpTo returns the pending events whose transactions an advance to lsn
// would skip (their commit record starts before lsn).
func PeekUpTo(ctx context.Context, conn *pgx.Conn, cfg replication.Config, lsn outboxrelay.LSN) ([]PendingEvent, error) {
	evs, _, err := peek(ctx, conn, cfg, &lsn, 0)
	if err != nil {
		return nil, err
	}
	out := evs[:0]
	for _, e := range evs {
		if e.CommitLSN < lsn {
			out = append(out, e)
		}
	}
	return out, nil
}

// peek runs one pg_logical_slot_peek_binary_changes; rows counts the
// output rows, to tell an exhausted slot from a cap reached.
func peek(ctx context.Context, conn *pgx.Conn, cfg replication.Config, upto *outboxrelay.LSN, nchanges int) (evs []PendingEvent, rows int, err error) {
	dec, err := replication.NewDecoder(cfg, nil)
	if err != nil {
		return nil, 0, err
	}
	// A publication without publish_via_partition_root names a partitioned
	// outbox's rows by partition. conn is busy reading the peek's rows, so
	// the partitions are read up front, and a relation of the outbox's
	// shape that is not one now (a partition detached since) is listed:
	// peek shows what the relay would have to decide about.
	tn := cfg.TableName()
	if ob, found, err := lookupOutbox(ctx, conn, tn); err != nil {
		return nil, 0, err
	} else if found {
		var shaped replication.OutboxMatcher
		if ob.relkind == "p" {
			shaped = func(_ uint32, _, _ string, columns []string) (bool, error) {
				return hasColumns(columns, cfg.Route.Columns.Required()), nil
			}
		}
		dec.MatchOutbox(replication.NewOutboxMatcher(tn, ob.relations, shaped))
	}
	var uptoArg, nArg any
	if upto != nil {
		uptoArg = upto.String()
	}
	if nchanges > 0 {
		nArg = nchanges
	}
	// With --message-prefix the events include logical messages, which
	// pgoutput sends only when asked (PostgreSQL 14+, which the relay
	// requires for messages): without them a message event could be
	// neither listed, nor skipped by id, nor counted by advance.
	messages := ""
	if cfg.MessagePrefix != "" {
		messages = `, 'messages', 'true'`
	}
	res, err := conn.Query(ctx, `
		SELECT lsn, data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, $3::int,
			'proto_version', '1', 'publication_names', $4`+messages+`)`, cfg.Slot, uptoArg, nArg, replication.QuoteIdent(cfg.Publication))
	if err != nil {
		return nil, 0, slotOpError(cfg.Slot, "peek", err)
	}
	defer res.Close()
	txnStart := 0
	for res.Next() {
		rows++
		var lsn outboxrelay.LSN
		var data []byte
		if err := res.Scan(&lsn, &data); err != nil {
			return nil, 0, fmt.Errorf("read peeked change: %w", err)
		}
		m, ok, err := dec.Decode(lsn, data)
		if err != nil {
			return nil, 0, err
		}
		if !ok {
			continue
		}
		switch m.Kind {
		case replication.KindEvent:
			e := PendingEvent{
				ID: m.Event.ID, LSN: m.Event.LSN, CommitLSN: m.Event.CommitLSN,
				CommitTime: m.Event.CommitTime, Topic: m.Event.Topic, Key: string(m.Event.Key),
			}
			if m.Err != nil {
				e.Error = m.Err.Error()
			}
			evs = append(evs, e)
		case replication.KindCommit:
			for i := txnStart; i < len(evs); i++ {
				evs[i].CommitEnd = m.LSN
			}
			txnStart = len(evs)
		}
	}
	if err := res.Err(); err != nil {
		return nil, 0, slotOpError(cfg.Slot, "peek", err)
	}
	return evs, rows, nil
}

// slotOpError names the fix for the usual refusals.
func slotOpError(slot, op string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case pgerr.ObjectInUse:
			return fmt.Errorf("%s slot %q: %s; stop the relay holding it first (status shows the PID): %w", op, slot, pgErr.Message, outboxrelay.ErrSlotActive)
		case pgerr.UndefinedObject:
			return &outboxrelay.ConfigError{Problem: fmt.Sprintf("%s slot %q: %s", op, slot, pgErr.Message), Fix: "check --slot, or create it with: outbox-relay setup"}
		case pgerr.InsufficientPrivilege:
			return &outboxrelay.ConfigError{Problem: fmt.Sprintf("%s slot %q: %s", op, slot, pgErr.Message), Fix: "use a role with the REPLICATION attribute (or rds_replication)"}
		}
	}
	return fmt.Errorf("%s slot %q: %w", op, slot, err)
}

func isUndefined(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "42883")
}

// idleSlot reads slot and refuses a missing or active one.
func idleSlot(ctx context.Context, conn *pgx.Conn, slot, op string) (checkpoint.SlotInfo, error) {
	s, err := checkpoint.ReadSlot(ctx, conn, slot)
	if err != nil {
		return s, err
	}
	if !s.Exists {
		return s, &outboxrelay.ConfigError{Problem: fmt.Sprintf("%s: replication slot %q does not exist", op, slot), Fix: "check --slot (outbox-relay status lists it)"}
	}
	if s.ActivePID != 0 {
		return s, fmt.Errorf("%s: replication slot %q is active for PID %d; stop the relay holding it first: %w", op, slot, s.ActivePID, outboxrelay.ErrSlotActive)
	}
	return s, nil
}

// CheckAdvance refuses an advance of a missing or active slot, to a
// position not past its confirmed one, or to a position past the server's
// flushed WAL, and returns the slot. Postgres itself stops an advance at the
// flushed WAL without a word, so a mistyped --to would skip every pending
// event and leave a record raised ahead of the slot, where it hides the
// next gap.
func CheckAdvance(ctx context.Context, conn *pgx.Conn, slot string, to outboxrelay.LSN) (checkpoint.SlotInfo, error) {
	s, err := idleSlot(ctx, conn, slot, "advance")
	if err != nil {
		return s, err
	}
	if to <= s.ConfirmedFlush {
		return s, &outboxrelay.ConfigError{
			Problem: fmt.Sprintf("advance: %s is not past slot %q's confirmed position %s", to, slot, s.ConfirmedFlush),
			Fix:     "a slot only moves forward; give a later --to (outbox-relay slot peek shows the pending LSNs)",
		}
	}
	flushed, err := flushedWAL(ctx, conn)
	if err != nil {
		return s, err
	}
	if to > flushed {
		return s, &outboxrelay.ConfigError{
			Problem: fmt.Sprintf("advance: %s is past the server's flushed WAL %s (slot %q is at %s); nothing was moved", to, flushed, slot, s.ConfirmedFlush),
			Fix:     fmt.Sprintf("check --to for a typo and give a position at or before %s (outbox-relay slot peek lists the pending events' commit positions)", flushed),
		}
	}
	return s, nil
}

// flushedWAL is pg_current_wal_flush_lsn(): the end of the WAL a slot can
// be advanced through.
func flushedWAL(ctx context.Context, conn *pgx.Conn) (outboxrelay.LSN, error) {
	var lsn outboxrelay.LSN
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()").Scan(&lsn); err != nil {
		return 0, fmt.Errorf("read the flushed WAL position: %w", err)
	}
	return lsn, nil
}

// AdvanceSlot moves an idle slot forward to `to` with
// pg_replication_slot_advance and returns where the slot ended. Postgres
// cannot move a slot and write a row atomically (slot state is not
// transactional), so the order keeps both halves of the record's contract
// (record.go): the record is raised to `to` before the slot moves, so it is
// never behind a position the tooling confirmed; and when the advance
// fails with the slot where it was, the record is put back as it was, so a
// refused move leaves no record ahead of the slot. CheckAdvance runs first:
// a target past the flushed WAL is refused before anything is written.
func AdvanceSlot(ctx context.Context, conn *pgx.Conn, slot string, to outboxrelay.LSN, movedBy string) (outboxrelay.LSN, error) {
	before, err := CheckAdvance(ctx, conn, slot, to)
	if err != nil {
		return 0, err
	}
	if err := checkpoint.EnsureTable(ctx, conn); err != nil {
		return 0, err
	}
	prev, hadRecord, err := checkpoint.Read(ctx, conn, slot)
	if err != nil {
		return 0, err
	}
	if err := checkpoint.Raise(ctx, conn, slot, to, movedBy); err != nil {
		return 0, err
	}
	var end outboxrelay.LSN
	err = conn.QueryRow(ctx, "SELECT end_lsn FROM pg_replication_slot_advance($1, $2::text::pg_lsn)", slot, to.String()).Scan(&end)
	if err == nil {
		return end, nil
	}
	err = slotOpError(slot, "advance", err)
	if hadRecord && prev.LSN >= to {
		return 0, err // the raise changed nothing
	}
	if rerr := restoreCheckpoint(ctx, conn, slot, before, prev, hadRecord, to, movedBy); rerr != nil {
		return 0, fmt.Errorf("%w; then: %w", err, rerr)
	}
	return 0, err
}

// restoreCheckpoint undoes AdvanceSlot's raise of the record to raised
// after a failed advance. It keeps the raised record when the slot moved
// after all (the record must cover it), and leaves alone a record someone
// else wrote since.
func restoreCheckpoint(ctx context.Context, conn *pgx.Conn, slot string, before checkpoint.SlotInfo, prev checkpoint.Record, hadRecord bool, raised outboxrelay.LSN, movedBy string) error {
	// The failed advance may have been cancelled: put the record back anyway.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	const unmoved = `AND (SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1) = $2::text::pg_lsn
		AND lsn = $3::text::pg_lsn AND moved_by = $4`
	args := []any{slot, before.ConfirmedFlush.String(), raised.String(), movedBy}
	quoted := "'" + strings.ReplaceAll(slot, "'", "''") + "'"
	undo := "DELETE FROM " + checkpoint.Table + " WHERE slot = " + quoted
	var err error
	if hadRecord {
		undo = fmt.Sprintf("UPDATE %s SET lsn = '%s' WHERE slot = %s", checkpoint.Table, prev.LSN, quoted)
		_, err = conn.Exec(ctx, "UPDATE outbox_relay.checkpoint SET lsn = $5::text::pg_lsn, updated_at = $6, moved_by = $7 WHERE slot = $1 "+unmoved,
			append(args, prev.LSN.String(), prev.UpdatedAt, prev.MovedBy)...)
	} else {
		_, err = conn.Exec(ctx, "DELETE FROM outbox_relay.checkpoint WHERE slot = $1 "+unmoved, args...)
	}
	if err != nil {
		return &outboxrelay.ConfigError{
			Problem: fmt.Sprintf("put back the checkpoint record of slot %q, raised to %s for the failed advance: %v", slot, raised, err),
			Fix:     fmt.Sprintf("if outbox-relay status still shows the slot at %s, run: %s", before.ConfirmedFlush, undo),
		}
	}
	return nil
}

// PlanSkip decides what skipping event id means, given the pending events in
// WAL order. Decoding never resumes inside a transaction, so the slot can
// only move past whole transactions: the event's transaction siblings go
// with it (allowed only with wholeTransaction) and any event committed before
// it would go too (always refused: deliver those first). It returns the
// events that would be skipped and the position to advance to.
func PlanSkip(pending []PendingEvent, id string, wholeTransaction bool) ([]PendingEvent, outboxrelay.LSN, error) {
	idx := -1
	for i, e := range pending {
		if e.ID == id {
			idx = i
			break
		}
	}
	if idx < 0 {
		return nil, 0, &outboxrelay.ConfigError{
			Problem: fmt.Sprintf("event %s is not pending in the slot (already confirmed, not committed, or not a row of the outbox table)", id),
			Fix:     "check the id with: outbox-relay slot peek",
		}
	}
	target := pending[idx].CommitEnd
	var before, siblings, skipped []PendingEvent
	for _, e := range pending {
		switch {
		case e.CommitEnd == target:
			skipped = append(skipped, e)
			if e.ID != id {
				siblings = append(siblings, e)
			}
		case e.CommitLSN < target:
			before = append(before, e)
		}
	}
	if len(before) > 0 {
		return nil, 0, &outboxrelay.ConfigError{
			Problem: fmt.Sprintf("%d pending event(s) committed before %s (first: %s at %s) would be skipped with it", len(before), id, before[0].ID, before[0].LSN),
			Fix:     "start the relay to deliver them (it stops again at an undeliverable event), then skip; or, to drop them too, use: outbox-relay slot advance --to " + target.String(),
		}
	}
	if len(siblings) > 0 && !wholeTransaction {
		ids := make([]string, len(siblings))
		for i, s := range siblings {
			ids[i] = s.ID
		}
		return nil, 0, &outboxrelay.ConfigError{
			Problem: fmt.Sprintf("event %s shares its transaction with %d other event(s) (%s); a slot cannot resume inside a transaction, so they would be skipped too", id, len(siblings), strings.Join(ids, ", ")),
			Fix:     "add --whole-transaction to skip all of them",
		}
	}
	return skipped, target, nil
}

// DropSlot drops an idle slot and forgets the relay's record of it.
func DropSlot(ctx context.Context, conn *pgx.Conn, slot string) error {
	if _, err := idleSlot(ctx, conn, slot, "drop"); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot); err != nil {
		return slotOpError(slot, "drop", err)
	}
	return checkpoint.Delete(ctx, conn, slot)
}
