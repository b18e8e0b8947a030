package replication

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Checkpointer keeps the relay's checkpoint record (see record.go) for every
// session of one relay process: it checks the slot against the record before
// each session streams, and its streams raise the record before they
// confirm. Create one per process and Wrap each session's Stream.
type Checkpointer struct {
	cfg Config
	// acceptGap lets exactly one gap pass: it is cleared when used, so a gap
	// that opens later in the same process still stops the relay.
	acceptGap atomic.Bool
	// memberships carries the publication reading across sessions.
	memberships memberships
	log         zerolog.Logger
	recorded    prometheus.Gauge
	gaps        *prometheus.CounterVec
}

// NewCheckpointer returns a Checkpointer for cfg's slot. acceptGap is the
// operator's --accept-gap; reg may be nil.
func NewCheckpointer(cfg Config, acceptGap bool, log zerolog.Logger, reg prometheus.Registerer) *Checkpointer {
	c := &Checkpointer{
		cfg: cfg,
		log: log.With().Str("component", "checkpoint").Str("slot", cfg.Slot).Logger(),
		recorded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_checkpoint_recorded_lsn",
			Help: "Position in the relay's checkpoint record (outbox_relay.checkpoint), as a number; it is written before the slot is confirmed there.",
		}),
		gaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_relay_checkpoint_gaps_total",
			Help: "Gaps found at session start (slot missing, lost or moved past the record), by outcome (refused, accepted).",
		}, []string{"outcome"}),
	}
	c.acceptGap.Store(acceptGap)
	if reg != nil {
		reg.MustRegister(c.recorded, c.gaps)
	}
	return c
}

// Wrap puts the record in front of one session's stream.
func (c *Checkpointer) Wrap(s *Stream) *CheckpointedStream {
	cs := &CheckpointedStream{Stream: s, cp: c, watch: publicationWatch{cfg: c.cfg, shared: &c.memberships}}
	// The watch's first reading is taken before replication starts, so no
	// change the stream decodes can be older than it. It runs on the
	// Stream's goroutine, before Streaming closes; Run's goroutine uses the
	// watch only after that.
	s.prepared = func(ctx context.Context, conn *pgx.Conn, in Inspection, start outboxrelay.LSN) error {
		return cs.watch.start(ctx, conn, in, start)
	}
	return cs
}

// CheckpointedStream is a Stream whose confirmations reach Postgres only
// after the checkpoint record covers them. Messages, Streaming and
// StartPosition are the Stream's.
type CheckpointedStream struct {
	*Stream
	cp    *Checkpointer
	want  atomic.Uint64
	watch publicationWatch // started by the Stream, then used by Run's goroutine
}

// Confirm asks for lsn to be confirmed: the stream's own goroutine raises
// the record to it and then confirms it, within half a status interval.
// Safe from any goroutine; it does no I/O.
func (s *CheckpointedStream) Confirm(lsn outboxrelay.LSN) {
	for {
		cur := s.want.Load()
		if uint64(lsn) <= cur || s.want.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// Run checks the slot against the record (a *GapError, fatal, when events
// were skipped behind the relay's back), then runs the Stream, raising the
// record and forwarding confirmations on a timer. On ctx end it records and
// forwards the last confirmation before the Stream sends its final status
// update. Errors are the Stream's, or the record's (worth a retry).
func (s *CheckpointedStream) Run(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.cfg.ConnString)
	if err != nil {
		close(s.out)
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), finalStatusTimeout)
		defer cancel()
		conn.Close(cctx)
	}()
	if err := s.cp.check(ctx, conn); err != nil {
		close(s.out)
		return err
	}

	inner, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	done := make(chan error, 1)
	go func() { done <- s.Stream.Run(inner) }()
	finish := func(err error) error {
		stop()
		return errors.Join(err, <-done)
	}

	interval := max(s.cfg.StatusInterval/2, 10*time.Millisecond)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var recorded outboxrelay.LSN
	streaming := s.Streaming()
	for {
		select {
		case err := <-done:
			return err
		case <-streaming:
			streaming = nil
			if recorded, err = s.cp.started(ctx, conn, s.StartPosition()); err != nil {
				return finish(err)
			}
		case <-tick.C:
			if streaming != nil {
				continue // nothing to confirm before the stream starts
			}
			// Not cancelled by ctx: a shutdown landing mid-write would
			// otherwise fail the flush and skip the final one below.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalStatusTimeout)
			recorded, err = s.flush(fctx, conn, recorded)
			cancel()
			if err != nil {
				return finish(err)
			}
		case <-ctx.Done():
			var ferr error
			if streaming == nil {
				fctx, cancel := context.WithTimeout(context.Background(), finalStatusTimeout)
				_, ferr = s.flush(fctx, conn, recorded)
				cancel()
			}
			return finish(ferr)
		}
	}
}

// flush verifies that the outbox is still published, raises the record to
// the wanted position, then confirms it. want is read before the check, so
// the check is newer than every position it covers.
func (s *CheckpointedStream) flush(ctx context.Context, conn *pgx.Conn, recorded outboxrelay.LSN) (outboxrelay.LSN, error) {
	want := outboxrelay.LSN(s.want.Load())
	if want > recorded {
		if err := s.watch.verify(ctx, conn, want); err != nil {
			return recorded, err
		}
		if err := RaiseCheckpoint(ctx, conn, s.cfg.Slot, want, MovedByRelay); err != nil {
			return recorded, err
		}
		recorded = want
		s.cp.recorded.Set(float64(want))
	}
	s.Stream.Confirm(min(want, recorded))
	return recorded, nil
}

// check runs before the Stream: it finds gaps, and applies --accept-gap.
func (c *Checkpointer) check(ctx context.Context, conn *pgx.Conn) error {
	if err := EnsureCheckpointTable(ctx, conn); err != nil {
		return err
	}
	// The slot first, the record second: see DetectGap.
	slot, err := ReadSlot(ctx, conn, c.cfg.Slot)
	if err != nil {
		return err
	}
	rec, ok, err := ReadCheckpoint(ctx, conn, c.cfg.Slot)
	if err != nil {
		return err
	}
	cur, err := CurrentWAL(ctx, conn)
	if err != nil {
		return err
	}
	gap := DetectGap(c.cfg.Slot, slot, rec, ok, cur)
	if gap == nil {
		if !ok && slot.Exists {
			if err := AdoptCheckpoint(ctx, conn, c.cfg.Slot, slot.ConfirmedFlush, MovedByAdopted); err != nil {
				return err
			}
			c.log.Info().Str("lsn", slot.ConfirmedFlush.String()).Msg("no checkpoint record yet: adopted the slot's position")
		}
		return nil
	}
	if !c.acceptGap.CompareAndSwap(true, false) {
		c.gaps.WithLabelValues("refused").Inc()
		return &GapError{Gap: *gap}
	}
	c.gaps.WithLabelValues("accepted").Inc()
	c.log.Warn().Str("kind", gap.Kind).Str("from", gap.From.String()).Str("to", gap.To.String()).
		Msg("--accept-gap: going on past a gap; " + gap.Describe())
	switch gap.Kind {
	case GapSlotMissing:
		// The slot about to be created starts a new history; its position
		// becomes the record once it streams.
		return DeleteCheckpoint(ctx, conn, c.cfg.Slot)
	case GapSlotLost:
		if slot.ActivePID != 0 {
			return fmt.Errorf("drop lost slot %q: held by PID %d: %w", c.cfg.Slot, slot.ActivePID, ErrSlotActive)
		}
		if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", c.cfg.Slot); err != nil {
			return fmt.Errorf("drop lost slot %q: %w", c.cfg.Slot, err)
		}
		c.log.Warn().Msg("dropped the lost slot; it is created anew (needs --create-missing)")
		return DeleteCheckpoint(ctx, conn, c.cfg.Slot)
	default:
		return ResetCheckpoint(ctx, conn, c.cfg.Slot, slot.ConfirmedFlush, MovedByAcceptGap)
	}
}

// started checks the position the Stream actually started from: the slot
// may have changed between check and the Stream's own preparation.
func (c *Checkpointer) started(ctx context.Context, conn *pgx.Conn, start outboxrelay.LSN) (outboxrelay.LSN, error) {
	rec, ok, err := ReadCheckpoint(ctx, conn, c.cfg.Slot)
	if err != nil {
		return 0, err
	}
	if !ok {
		if err := AdoptCheckpoint(ctx, conn, c.cfg.Slot, start, MovedByCreated); err != nil {
			return 0, err
		}
		c.recorded.Set(float64(start))
		return start, nil
	}
	if start > rec.LSN {
		c.gaps.WithLabelValues("refused").Inc()
		return 0, &GapError{Gap: Gap{Kind: GapSlotMoved, Slot: c.cfg.Slot, From: rec.LSN, To: start, RecordedAt: rec.UpdatedAt}}
	}
	c.recorded.Set(float64(rec.LSN))
	return rec.LSN, nil
}
