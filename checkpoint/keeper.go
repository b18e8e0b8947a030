package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// recordTimeout bounds one write of the record. The write is not cancelled
// with the session: a shutdown landing mid-write would otherwise break the
// connection and skip the final status update, and a graceful restart would
// resend what Kafka had acked.
const recordTimeout = 5 * time.Second

// Keeper keeps the durable record of one slot for every session of one
// relay process: Check finds gaps before a session streams, Started
// compares the position it starts from, and Recorder raises the record
// before each confirmation. Create one per process.
type Keeper struct {
	slot string
	// acceptGap lets exactly one gap pass: it is cleared when used, so a gap
	// that opens later in the same process still stops the relay.
	acceptGap atomic.Bool
	log       zerolog.Logger
	recorded  prometheus.Gauge
	gaps      *prometheus.CounterVec
}

// NewKeeper returns a Keeper for slot. acceptGap is the operator's
// --accept-gap; reg may be nil.
func NewKeeper(slot string, acceptGap bool, log zerolog.Logger, reg prometheus.Registerer) *Keeper {
	k := &Keeper{
		slot: slot,
		log:  log.With().Str("component", "checkpoint").Str("slot", slot).Logger(),
		recorded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_checkpoint_recorded_lsn",
			Help: "Position in the relay's checkpoint record (outbox_relay.checkpoint), as a number; it is written before the slot is confirmed there.",
		}),
		gaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_relay_checkpoint_gaps_total",
			Help: "Gaps found at session start (slot missing, lost or moved past the record) and starts past a kept halt, by outcome (refused, accepted).",
		}, []string{"outcome"}),
	}
	k.acceptGap.Store(acceptGap)
	if reg != nil {
		reg.MustRegister(k.recorded, k.gaps)
	}
	return k
}

// Check runs before a session prepares its slot: it finds gaps (a
// *GapError, fatal, when events were skipped behind the relay's back) and
// applies --accept-gap once.
func (k *Keeper) Check(ctx context.Context, conn *pgx.Conn) error {
	if err := EnsureTable(ctx, conn); err != nil {
		return err
	}
	// The slot first, the record second: see DetectGap.
	slot, err := ReadSlot(ctx, conn, k.slot)
	if err != nil {
		return err
	}
	rec, ok, err := Read(ctx, conn, k.slot)
	if err != nil {
		return err
	}
	if reason, halted := rec.Halted(); halted {
		if err := k.acceptHalt(ctx, conn, rec, reason); err != nil {
			return err
		}
	}
	cur, err := CurrentWAL(ctx, conn)
	if err != nil {
		return err
	}
	gap := DetectGap(k.slot, slot, rec, ok, cur)
	if gap == nil {
		if !ok && slot.Exists {
			if err := Adopt(ctx, conn, k.slot, slot.ConfirmedFlush, MovedByAdopted); err != nil {
				return err
			}
			k.log.Info().Str("lsn", slot.ConfirmedFlush.String()).Msg("no checkpoint record yet: adopted the slot's position")
		}
		return nil
	}
	gap.DetectedAt = serverTime(ctx, conn)
	if !k.acceptGap.CompareAndSwap(true, false) {
		k.gaps.WithLabelValues("refused").Inc()
		return &GapError{Gap: *gap}
	}
	k.gaps.WithLabelValues("accepted").Inc()
	msg := "--accept-gap: going on past a gap; " + gap.Describe()
	if args := gap.ReplayArgs(); args != nil {
		msg += "; re-publish its events with `outbox-relay " + strings.Join(args, " ") + " --yes` and the relay's connection, table and routing flags"
	}
	k.log.Warn().Str("kind", gap.Kind).Str("from", gap.From.String()).Str("to", gap.To.String()).Msg(msg)
	return k.accept(ctx, conn, gap, slot)
}

// acceptHalt refuses to start past a kept HaltError unless the operator
// passed --accept-gap (used up here); then the record says so and stays
// where it was.
func (k *Keeper) acceptHalt(ctx context.Context, conn *pgx.Conn, rec Record, reason string) error {
	if !k.acceptGap.CompareAndSwap(true, false) {
		k.gaps.WithLabelValues("refused").Inc()
		return &outboxrelay.ConfigError{
			Problem: fmt.Sprintf("the relay halted earlier and its checkpoint record %s keeps why: %s", Table, reason),
			Fix:     "re-publish the rows it names (docs/operations.md, 'Outbox left the publication'), then start once with --accept-gap",
		}
	}
	k.gaps.WithLabelValues("accepted").Inc()
	k.log.Warn().Str("halted_at", reason).Msg("--accept-gap: going on past an earlier halt")
	return Reset(ctx, conn, k.slot, rec.LSN, MovedByAcceptGap)
}

// accept moves the record (and a lost slot) so the session goes on past gap.
func (k *Keeper) accept(ctx context.Context, conn *pgx.Conn, gap *Gap, slot SlotInfo) error {
	switch gap.Kind {
	case GapSlotMissing:
		// The slot about to be created starts a new history; its position
		// becomes the record once it streams.
		return Delete(ctx, conn, k.slot)
	case GapSlotLost:
		if slot.ActivePID != 0 {
			return fmt.Errorf("drop lost slot %q: held by PID %d: %w", k.slot, slot.ActivePID, outboxrelay.ErrSlotActive)
		}
		if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", k.slot); err != nil {
			return fmt.Errorf("drop lost slot %q: %w", k.slot, err)
		}
		k.log.Warn().Msg("dropped the lost slot; it is created anew (needs --create-missing)")
		return Delete(ctx, conn, k.slot)
	default:
		return Reset(ctx, conn, k.slot, slot.ConfirmedFlush, MovedByAcceptGap)
	}
}

// Started checks the position a session starts from (the slot may have
// changed since Check, or been created by it) and returns the record's.
func (k *Keeper) Started(ctx context.Context, conn *pgx.Conn, start outboxrelay.LSN) (outboxrelay.LSN, error) {
	rec, ok, err := Read(ctx, conn, k.slot)
	if err != nil {
		return 0, err
	}
	if !ok {
		if err := Adopt(ctx, conn, k.slot, start, MovedByCreated); err != nil {
			return 0, err
		}
		k.recorded.Set(float64(start))
		return start, nil
	}
	if start > rec.LSN {
		k.gaps.WithLabelValues("refused").Inc()
		return 0, &GapError{Gap: Gap{Kind: GapSlotMoved, Slot: k.slot, From: rec.LSN, To: start, RecordedAt: rec.UpdatedAt, DetectedAt: serverTime(ctx, conn)}}
	}
	k.recorded.Set(float64(rec.LSN))
	return rec.LSN, nil
}

// Recorder returns one session's hook for the stream's status updates
// (replication.Plan.Record): it runs verify, then raises the record on conn
// to the wanted position, and only then lets the stream confirm it.
// recorded is what Started returned. The hook runs on the stream's
// goroutine only, which is also the only user of conn.
func (k *Keeper) Recorder(conn *pgx.Conn, recorded outboxrelay.LSN, verify func(ctx context.Context, upTo outboxrelay.LSN) error) func(ctx context.Context, want outboxrelay.LSN) (outboxrelay.LSN, error) {
	return func(ctx context.Context, want outboxrelay.LSN) (outboxrelay.LSN, error) {
		if want <= recorded {
			return want, nil
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
		defer cancel()
		// want was read before the check, so the check is newer than every
		// position it covers.
		if verify != nil {
			if err := verify(ctx, want); err != nil {
				var he *HaltError
				if errors.As(err, &he) {
					// Kept, so no later start goes past it unseen.
					err = errors.Join(err, MarkHalted(ctx, conn, k.slot, he.Err.Problem))
				}
				return 0, err
			}
		}
		if err := Raise(ctx, conn, k.slot, want, MovedByRelay); err != nil {
			return 0, err
		}
		recorded = want
		k.recorded.Set(float64(want))
		return want, nil
	}
}

// serverTime is the server's clock (the one created_at reads), or the
// relay's when the server cannot say: a gap report prints a time window,
// not a position, so a wrong clock only widens or shifts it.
func serverTime(ctx context.Context, conn *pgx.Conn) time.Time {
	var t time.Time
	if err := conn.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&t); err != nil {
		return time.Now()
	}
	return t
}
