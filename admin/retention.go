package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// RetentionConfig is the daemon's pruning schedule (run --retention).
type RetentionConfig struct {
	// ConnString is a plain (non-replication) libpq URL.
	ConnString string
	// Prune says what a run deletes; AllowSeqscan is ignored: the daemon
	// never scans the table.
	Prune PruneConfig
	// Every is the wait between two runs; the first comes one Every after
	// Run starts.
	Every time.Duration
}

// Retention prunes on a schedule, from the active relay only: a hot
// standby shares the table with it, and two pruners would only race.
type Retention struct {
	cfg    RetentionConfig
	active func() bool
	log    zerolog.Logger

	deleted  prometheus.Counter
	runs     *prometheus.CounterVec
	lastRun  prometheus.Gauge
	duration prometheus.Gauge
}

// Outcomes of a scheduled run, the runs counter's result label.
const (
	RetentionPruned  = "pruned"
	RetentionStandby = "standby"
	RetentionError   = "error"
)

// NewRetention validates cfg and registers the retention metrics on reg
// (which may be nil). active reports whether this process streams from
// the slot; it is called from Run's goroutine before each run.
func NewRetention(cfg RetentionConfig, active func() bool, log zerolog.Logger, reg prometheus.Registerer) (*Retention, error) {
	cfg.Prune.AllowSeqscan = false
	if err := cfg.Prune.Validate(); err != nil {
		return nil, fmt.Errorf("retention: %w", err)
	}
	if cfg.Every <= 0 {
		return nil, fmt.Errorf("retention interval %s: give a positive duration", cfg.Every)
	}
	r := &Retention{
		cfg: cfg, active: active,
		log: log.With().Str("component", "retention").Logger(),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_retention_deleted_rows_total",
			Help: "Outbox rows deleted by --retention.",
		}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_relay_retention_runs_total",
			Help: "Scheduled retention runs by result: pruned, standby (skipped: another relay is active) or error.",
		}, []string{"result"}),
		lastRun: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_retention_last_run_timestamp_seconds",
			Help: "When the last retention run that pruned finished (unix seconds); 0 before the first.",
		}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_retention_last_run_duration_seconds",
			Help: "How long the last retention run that pruned took.",
		}),
	}
	for _, res := range []string{RetentionPruned, RetentionStandby, RetentionError} {
		r.runs.WithLabelValues(res)
	}
	if reg != nil {
		reg.MustRegister(r.deleted, r.runs, r.lastRun, r.duration)
	}
	return r, nil
}

// Run prunes every cfg.Every until ctx ends, then returns nil. A failed run
// is logged and counted, never a reason to stop the relay: old rows only
// take room.
func (r *Retention) Run(ctx context.Context) error {
	tick := time.NewTicker(r.cfg.Every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if !r.active() {
			r.runs.WithLabelValues(RetentionStandby).Inc()
			r.log.Debug().Msg("retention skipped: this relay does not hold the slot")
			continue
		}
		res, horizon, err := r.once(ctx)
		if ctx.Err() != nil {
			return nil
		}
		r.deleted.Add(float64(res.Deleted))
		if err != nil {
			r.runs.WithLabelValues(RetentionError).Inc()
			r.log.Error().Err(err).Int64("deleted", res.Deleted).Msg("retention run failed")
			continue
		}
		r.runs.WithLabelValues(RetentionPruned).Inc()
		r.lastRun.SetToCurrentTime()
		r.duration.Set(res.Duration.Seconds())
		r.log.Info().Int64("deleted", res.Deleted).Int("batches", len(res.Batches)).Time("horizon", horizon).
			Dur("duration", res.Duration).Msg("retention run")
	}
}

// once connects, plans and prunes.
func (r *Retention) once(ctx context.Context) (PruneResult, time.Time, error) {
	conn, err := pgx.Connect(ctx, r.cfg.ConnString)
	if err != nil {
		return PruneResult{}, time.Time{}, fmt.Errorf("connect to postgres: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	plan, err := PlanPrune(ctx, conn, r.cfg.Prune)
	var noIndex *NoIndexError
	if errors.As(err, &noIndex) {
		return PruneResult{}, time.Time{}, fmt.Errorf("%w; set --created-at-column or create the index", err)
	}
	if err != nil {
		return PruneResult{}, time.Time{}, err
	}
	res, err := Prune(ctx, conn, r.cfg.Prune, plan.Horizon, nil)
	return res, plan.Horizon, err
}
