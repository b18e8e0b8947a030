package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/pgerr"
)

// The checkpoint record is the relay's own durable memory of how far it
// confirmed each slot, kept outside the slot so that a slot dropped,
// recreated, advanced behind the relay's back or invalidated is noticed
// instead of silently skipping events. Its invariant, kept by the Keeper's
// Record hook, `slot advance` and `slot skip`:
//
//	record >= every position confirmed to the slot by this tooling
//
// because the record is raised before a position is confirmed. So a slot
// whose confirmed_flush_lsn is past the record was moved by something else.

// Table is the relay's table, created by `outbox-relay setup` or
// by the relay at start.
const Table = "outbox_relay.checkpoint"

// TableSQL creates the table; a DBA can run it for a role that may
// not create schemas (then also GRANT SELECT, INSERT, UPDATE, DELETE on it).
const TableSQL = `CREATE SCHEMA IF NOT EXISTS outbox_relay;
CREATE TABLE IF NOT EXISTS outbox_relay.checkpoint (
    slot       text        PRIMARY KEY,
    lsn        pg_lsn      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    moved_by   text        NOT NULL
);`

// Who moved the record, for `status` and the gap report.
const (
	MovedByRelay     = "relay"
	MovedByAdopted   = "relay: adopted the slot's position (no record yet)"
	MovedByCreated   = "relay: slot created"
	MovedByAcceptGap = "relay: --accept-gap"
	MovedBySetup     = "setup"
	MovedByAdvance   = "slot advance"
	MovedBySkip      = "slot skip"
)

// haltedPrefix starts MovedBy while the relay is halted at a HaltError.
const haltedPrefix = "halted: "

// maxHaltReason bounds the reason kept in MovedBy.
const maxHaltReason = 2000

// Record is the relay's record for one slot.
type Record struct {
	Slot      string
	LSN       outboxrelay.LSN
	UpdatedAt time.Time
	MovedBy   string
}

// EnsureTable creates the table if missing. A role that may not
// gets a ConfigError with the SQL for a DBA.
func EnsureTable(ctx context.Context, conn *pgx.Conn) error {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", Table).Scan(&exists); err != nil {
		return fmt.Errorf("look up %s: %w", Table, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, TableSQL); err != nil && !pgerr.Is(err, pgerr.DuplicateObject) && !pgerr.Is(err, pgerr.UniqueViolation) {
		if pgerr.Is(err, pgerr.InsufficientPrivilege) {
			return &outboxrelay.ConfigError{
				Problem: fmt.Sprintf("create the checkpoint table %s: %v", Table, err),
				Fix:     "have a DBA run `outbox-relay setup --print-sql` and grant the role SELECT, INSERT, UPDATE, DELETE on " + Table,
			}
		}
		return fmt.Errorf("create the checkpoint table %s: %w", Table, err)
	}
	return nil
}

// Halted returns the reason the relay halted at, when it did (see
// HaltError): the record then refuses every start until --accept-gap.
func (r Record) Halted() (reason string, halted bool) {
	return strings.CutPrefix(r.MovedBy, haltedPrefix)
}

// MarkHalted keeps reason in slot's record without moving it.
func MarkHalted(ctx context.Context, conn *pgx.Conn, slot, reason string) error {
	if r := []rune(reason); len(r) > maxHaltReason {
		reason = string(r[:maxHaltReason]) + "..."
	}
	if _, err := conn.Exec(ctx, "UPDATE outbox_relay.checkpoint SET moved_by = $2 WHERE slot = $1", slot, haltedPrefix+reason); err != nil {
		return fmt.Errorf("keep the halt in the checkpoint record of slot %q: %w", slot, err)
	}
	return nil
}

// Read returns the record for slot; ok is false when there is none
// (or no table yet).
func Read(ctx context.Context, conn *pgx.Conn, slot string) (cp Record, ok bool, err error) {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", Table).Scan(&exists); err != nil {
		return cp, false, fmt.Errorf("look up %s: %w", Table, err)
	}
	if !exists {
		return cp, false, nil
	}
	err = conn.QueryRow(ctx, "SELECT slot, lsn, updated_at, moved_by FROM outbox_relay.checkpoint WHERE slot = $1", slot).
		Scan(&cp.Slot, &cp.LSN, &cp.UpdatedAt, &cp.MovedBy)
	if errors.Is(err, pgx.ErrNoRows) {
		return cp, false, nil
	}
	if err != nil {
		return cp, false, fmt.Errorf("read checkpoint record of slot %q: %w", slot, err)
	}
	return cp, true, nil
}

// Raise moves the record up to lsn; a record already higher stays
// (raising is what keeps record >= confirmed when the slot moved back after
// a Postgres crash).
func Raise(ctx context.Context, conn *pgx.Conn, slot string, lsn outboxrelay.LSN, movedBy string) error {
	_, err := conn.Exec(ctx, `
		INSERT INTO outbox_relay.checkpoint (slot, lsn, moved_by) VALUES ($1, $2::text::pg_lsn, $3)
		ON CONFLICT (slot) DO UPDATE SET lsn = excluded.lsn, updated_at = now(), moved_by = excluded.moved_by
		WHERE checkpoint.lsn < excluded.lsn`, slot, lsn.String(), movedBy)
	if err != nil {
		return fmt.Errorf("record checkpoint of slot %q: %w", slot, err)
	}
	return nil
}

// Adopt writes the record only if there is none.
func Adopt(ctx context.Context, conn *pgx.Conn, slot string, lsn outboxrelay.LSN, movedBy string) error {
	_, err := conn.Exec(ctx, `
		INSERT INTO outbox_relay.checkpoint (slot, lsn, moved_by) VALUES ($1, $2::text::pg_lsn, $3)
		ON CONFLICT (slot) DO NOTHING`, slot, lsn.String(), movedBy)
	if err != nil {
		return fmt.Errorf("record checkpoint of slot %q: %w", slot, err)
	}
	return nil
}

// Reset sets the record to lsn, lower or not: only for an
// accepted gap.
func Reset(ctx context.Context, conn *pgx.Conn, slot string, lsn outboxrelay.LSN, movedBy string) error {
	_, err := conn.Exec(ctx, `
		INSERT INTO outbox_relay.checkpoint (slot, lsn, moved_by) VALUES ($1, $2::text::pg_lsn, $3)
		ON CONFLICT (slot) DO UPDATE SET lsn = excluded.lsn, updated_at = now(), moved_by = excluded.moved_by`,
		slot, lsn.String(), movedBy)
	if err != nil {
		return fmt.Errorf("reset checkpoint of slot %q: %w", slot, err)
	}
	return nil
}

// Delete forgets the record of slot (after `slot drop`, or an
// accepted gap on a missing slot: the next slot's position is adopted).
func Delete(ctx context.Context, conn *pgx.Conn, slot string) error {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", Table).Scan(&exists); err != nil {
		return fmt.Errorf("look up %s: %w", Table, err)
	}
	if !exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "DELETE FROM outbox_relay.checkpoint WHERE slot = $1", slot); err != nil {
		return fmt.Errorf("delete checkpoint of slot %q: %w", slot, err)
	}
	return nil
}
