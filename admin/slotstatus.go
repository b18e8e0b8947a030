package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/checkpoint"
	"github.com/outbox-relay/outbox-relay/replication"
)

// SlotStatus is a slot as an operator wants to see it, with the server's
// WAL position and the decoding statistics.
type SlotStatus struct {
	Name           string
	Exists         bool
	Plugin         string
	Database       string
	Active         bool
	ActivePID      int32
	ConfirmedFlush outboxrelay.LSN
	RestartLSN     outboxrelay.LSN
	WALStatus      string
	// SafeWALSize is how many more bytes of WAL may be written before the
	// slot is lost; nil when max_slot_wal_keep_size is unlimited.
	SafeWALSize *int64
	CurrentWAL  outboxrelay.LSN
	// UnconfirmedBytes is WAL written since the confirmed position: what a
	// relay still has to read (mostly other tables' changes).
	UnconfirmedBytes int64
	// RetainedBytes is WAL kept on disk for this slot (from restart_lsn).
	RetainedBytes int64
	// Stats are pg_stat_replication_slots' counters (PG14+); nil if none.
	Stats *SlotStats
}

// SlotStats are the spill and stream counters of pg_stat_replication_slots.
type SlotStats struct {
	SpillTxns   int64
	SpillCount  int64
	SpillBytes  int64
	StreamTxns  int64
	StreamCount int64
	StreamBytes int64
	TotalTxns   int64
	TotalBytes  int64
	StatsReset  *time.Time
}

// ReadSlotStatus describes slot; Exists is false when there is none.
func ReadSlotStatus(ctx context.Context, conn *pgx.Conn, slot string) (SlotStatus, error) {
	st := SlotStatus{Name: slot}
	var confirmed, restart *outboxrelay.LSN
	var walStatus *string
	var pid *int32
	var unconfirmed, retained, safe *int64
	err := conn.QueryRow(ctx, `
		SELECT pg_current_wal_lsn(), s.slot_name IS NOT NULL,
		       coalesce(s.plugin, ''), coalesce(s.database, ''), coalesce(s.active, false), s.active_pid,
		       s.confirmed_flush_lsn, s.restart_lsn, s.wal_status, s.safe_wal_size,
		       pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint,
		       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint
		FROM (SELECT 1) one LEFT JOIN pg_replication_slots s ON s.slot_name = $1`, slot).
		Scan(&st.CurrentWAL, &st.Exists, &st.Plugin, &st.Database, &st.Active, &pid,
			&confirmed, &restart, &walStatus, &safe, &unconfirmed, &retained)
	if err != nil {
		return st, fmt.Errorf("read replication slot %q: %w", slot, err)
	}
	if pid != nil {
		st.ActivePID = *pid
	}
	if walStatus != nil {
		st.WALStatus = *walStatus
	}
	st.SafeWALSize = safe
	if unconfirmed != nil {
		st.UnconfirmedBytes = *unconfirmed
	}
	if retained != nil {
		st.RetainedBytes = *retained
	}
	if confirmed != nil {
		st.ConfirmedFlush = *confirmed
	}
	if restart != nil {
		st.RestartLSN = *restart
	}
	if !st.Exists {
		return st, nil
	}
	var stats SlotStats
	err = conn.QueryRow(ctx, `
		SELECT spill_txns, spill_count, spill_bytes, stream_txns, stream_count, stream_bytes,
		       total_txns, total_bytes, stats_reset
		FROM pg_stat_replication_slots WHERE slot_name = $1`, slot).
		Scan(&stats.SpillTxns, &stats.SpillCount, &stats.SpillBytes, &stats.StreamTxns, &stats.StreamCount,
			&stats.StreamBytes, &stats.TotalTxns, &stats.TotalBytes, &stats.StatsReset)
	switch {
	case err == nil:
		st.Stats = &stats
	case errors.Is(err, pgx.ErrNoRows):
	default:
		// PG13 has no pg_stat_replication_slots: the rest still stands.
		if !isUndefined(err) {
			return st, fmt.Errorf("read pg_stat_replication_slots: %w", err)
		}
	}
	return st, nil
}

// Info is the subset Preflight uses.
func (st SlotStatus) Info() checkpoint.SlotInfo {
	return checkpoint.SlotInfo{
		Exists: st.Exists, Plugin: st.Plugin, Database: st.Database, ActivePID: st.ActivePID,
		ConfirmedFlush: st.ConfirmedFlush, RestartLSN: st.RestartLSN, WALStatus: st.WALStatus,
	}
}

// SlotMonitor polls the slot for the lag metrics: what the server sees, so
// it keeps reporting while the relay is a standby, reconnecting or stuck.
// It is a sibling of the relay, never inside the stream.
type SlotMonitor struct {
	cfg      replication.Config
	interval time.Duration
	log      zerolog.Logger

	lag       prometheus.Gauge
	server    prometheus.Gauge
	confirmed prometheus.Gauge
	retained  prometheus.Gauge
	safe      prometheus.Gauge
	active    prometheus.Gauge
	walStatus *prometheus.GaugeVec
	errors    prometheus.Counter
}

// walStatuses are pg_replication_slots.wal_status values, plus missing.
var walStatuses = []string{"reserved", "extended", "unreserved", "lost", "missing"}

// NewSlotMonitor registers the slot metrics on reg (which may be nil).
func NewSlotMonitor(cfg replication.Config, interval time.Duration, log zerolog.Logger, reg prometheus.Registerer) *SlotMonitor {
	m := &SlotMonitor{
		cfg: cfg, interval: interval,
		log: log.With().Str("component", "slot_monitor").Str("slot", cfg.Slot).Logger(),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_slot_lag_bytes",
			Help: "WAL written since the slot's confirmed_flush_lsn (pg_current_wal_lsn() - confirmed_flush_lsn), polled from the server.",
		}),
		server: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_slot_server_lsn",
			Help: "The server's WAL position (pg_current_wal_lsn()) at the last poll, as a number.",
		}),
		confirmed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_slot_confirmed_flush_lsn",
			Help: "The slot's confirmed_flush_lsn at the last poll, as a number (0 while the slot is missing).",
		}),
		retained: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_slot_retained_wal_bytes",
			Help: "WAL the server keeps on disk for the slot (pg_current_wal_lsn() - restart_lsn).",
		}),
		safe: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_slot_safe_wal_size_bytes",
			Help: "WAL that may still be written before the slot is lost (safe_wal_size); -1 when max_slot_wal_keep_size is unlimited.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_slot_active",
			Help: "1 while some process (this relay or another) streams from the slot.",
		}),
		walStatus: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outbox_relay_slot_wal_status",
			Help: "1 for the slot's wal_status (reserved, extended, unreserved, lost) or missing, 0 for the others.",
		}, []string{"status"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_slot_poll_errors_total",
			Help: "Failed polls of the slot's state.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.lag, m.server, m.confirmed, m.retained, m.safe, m.active, m.walStatus, m.errors)
	}
	return m
}

// Run polls until ctx ends and returns nil: a failed poll is logged and
// counted, never a reason to stop the relay.
func (m *SlotMonitor) Run(ctx context.Context) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			conn.Close(cctx)
		}
	}()
	tick := time.NewTicker(m.interval)
	defer tick.Stop()
	for {
		if err := m.poll(ctx, &conn); err != nil && ctx.Err() == nil {
			m.errors.Inc()
			m.log.Warn().Err(err).Msg("poll slot")
			if conn != nil {
				conn.Close(ctx)
				conn = nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (m *SlotMonitor) poll(ctx context.Context, conn **pgx.Conn) error {
	pctx, cancel := context.WithTimeout(ctx, max(m.interval, 5*time.Second))
	defer cancel()
	if *conn == nil {
		c, err := pgx.Connect(pctx, m.cfg.ConnString)
		if err != nil {
			return fmt.Errorf("connect to postgres: %w", err)
		}
		*conn = c
	}
	st, err := ReadSlotStatus(pctx, *conn, m.cfg.Slot)
	if err != nil {
		return err
	}
	status := st.WALStatus
	if !st.Exists {
		status = "missing"
	}
	for _, s := range walStatuses {
		v := 0.0
		if s == status {
			v = 1
		}
		m.walStatus.WithLabelValues(s).Set(v)
	}
	m.lag.Set(float64(st.UnconfirmedBytes))
	m.server.Set(float64(st.CurrentWAL))
	m.confirmed.Set(float64(st.ConfirmedFlush))
	m.retained.Set(float64(st.RetainedBytes))
	if st.SafeWALSize != nil {
		m.safe.Set(float64(*st.SafeWALSize))
	} else {
		m.safe.Set(-1)
	}
	if st.Active {
		m.active.Set(1)
	} else {
		m.active.Set(0)
	}
	return nil
}
