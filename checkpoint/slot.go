package checkpoint

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// SlotInfo is the slot as pg_replication_slots describes it.
type SlotInfo struct {
	Exists         bool
	Plugin         string
	Database       string
	ActivePID      int32
	ConfirmedFlush outboxrelay.LSN
	RestartLSN     outboxrelay.LSN
	WALStatus      string
}

// ReadSlot describes a slot; Exists is false when there is none.
func ReadSlot(ctx context.Context, conn *pgx.Conn, slot string) (SlotInfo, error) {
	var s SlotInfo
	var confirmed, restart *outboxrelay.LSN
	var walStatus *string
	var pid *int32
	err := conn.QueryRow(ctx, `
		SELECT coalesce(plugin, ''), coalesce(database, ''), active_pid,
		       confirmed_flush_lsn, restart_lsn, wal_status
		FROM pg_replication_slots WHERE slot_name = $1`, slot).
		Scan(&s.Plugin, &s.Database, &pid, &confirmed, &restart, &walStatus)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read replication slot %q: %w", slot, err)
	}
	s.Exists = true
	if pid != nil {
		s.ActivePID = *pid
	}
	if walStatus != nil {
		s.WALStatus = *walStatus
	}
	if confirmed != nil {
		s.ConfirmedFlush = *confirmed
	}
	if restart != nil {
		s.RestartLSN = *restart
	}
	return s, nil
}

// CurrentWAL is pg_current_wal_lsn().
func CurrentWAL(ctx context.Context, conn *pgx.Conn) (outboxrelay.LSN, error) {
	var lsn outboxrelay.LSN
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()").Scan(&lsn); err != nil {
		return 0, fmt.Errorf("read current WAL position: %w", err)
	}
	return lsn, nil
}
