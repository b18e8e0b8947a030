package admin

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/checkpoint"
	"github.com/outbox-relay/outbox-relay/replication"
)

// lookupTimeout bounds one partition lookup.
const lookupTimeout = 5 * time.Second

// Sessions prepares every replication session of one relay process
// (replication.Preparer): the gap check, preflight, setup, the slot, the
// publication watch's first reading; and gives each stream its Record hook
// (the watch's check, then the durable record). Create one per process.
type Sessions struct {
	cfg    replication.Config
	keeper *checkpoint.Keeper
	log    zerolog.Logger
	// memberships carries the publication reading across sessions;
	// outboxMemberships those of cfg.Outboxes.
	memberships       memberships
	outboxMemberships []memberships
	// server is what the last Prepare read of the database itself.
	server atomic.Pointer[Server]
}

// Server describes the database a session streams from, as its Prepare
// found it: with the slot, SystemID names this relay to Kafka (the
// exactly-once producer's transactional.id and position key); Timeline and
// WALEnd let that producer judge a position Kafka holds (one of another
// timeline or ahead of this WAL is not this database's).
type Server struct {
	SystemID string
	Timeline uint32
	WALEnd   outboxrelay.LSN
}

// Server returns what the last prepared session found (the zero Server
// before the first).
func (p *Sessions) Server() Server {
	if s := p.server.Load(); s != nil {
		return *s
	}
	return Server{}
}

// NewSessions returns the Preparer of cfg's sessions; keeper keeps the
// slot's durable record.
func NewSessions(cfg replication.Config, keeper *checkpoint.Keeper, log zerolog.Logger) *Sessions {
	return &Sessions{cfg: cfg, keeper: keeper, log: log.With().Str("component", "replication").Logger(),
		outboxMemberships: make([]memberships, len(cfg.Outboxes))}
}

// Prepare readies one session. The connection it opens serves the whole
// session on the stream's goroutine: the Record hook and the partition
// lookups; Plan.Close closes it.
func (p *Sessions) Prepare(ctx context.Context) (plan replication.Plan, err error) {
	conn, err := pgx.Connect(ctx, p.cfg.ConnString)
	if err != nil {
		return plan, fmt.Errorf("connect to postgres: %w", err)
	}
	closeConn := func() { conn.Close(context.WithoutCancel(ctx)) }
	defer func() {
		if err != nil {
			closeConn()
		}
	}()
	if err := p.keeper.Check(ctx, conn); err != nil {
		return plan, err
	}
	in, slot, err := p.setUp(ctx, conn)
	if err != nil {
		return plan, err
	}
	var srv Server
	// The checkpoint's timeline lags a promotion until the checkpoint that
	// follows it; until then the new primary's WAL is behind what the old
	// one's relay wrote, which the WAL end check catches.
	if err := conn.QueryRow(ctx, `SELECT s.system_identifier::text, c.timeline_id, pg_current_wal_lsn()
		FROM pg_control_system() s, pg_control_checkpoint() c`).Scan(&srv.SystemID, &srv.Timeline, &srv.WALEnd); err != nil {
		return plan, fmt.Errorf("read the system identifier and timeline: %w", err)
	}
	p.server.Store(&srv)
	// The watch's first reading is taken before replication starts, so no
	// change the stream decodes can be older than it.
	watches, err := p.startWatches(ctx, conn, in, slot.ConfirmedFlush)
	if err != nil {
		return plan, err
	}
	recorded, err := p.keeper.Started(ctx, conn, slot.ConfirmedFlush)
	if err != nil {
		return plan, err
	}
	plan = replication.Plan{
		Start: slot.ConfirmedFlush, Delivered: recorded, ServerVersion: in.ServerVersion, Relations: in.Relations,
		Record: p.keeper.Recorder(conn, recorded, func(ctx context.Context, upTo outboxrelay.LSN) error {
			for _, w := range watches {
				if err := w.verify(ctx, conn, upTo); err != nil {
					return err
				}
			}
			return nil
		}),
		Close: closeConn,
	}
	if in.Partitioned {
		plan.Lookup = p.partitionLookup(ctx, conn, in)
	}
	return plan, nil
}

// startWatches takes the first reading of the publication for every
// outbox: a table leaving it must stop the relay whichever outbox it is.
func (p *Sessions) startWatches(ctx context.Context, conn *pgx.Conn, in Inspection, at outboxrelay.LSN) ([]*publicationWatch, error) {
	watches := []*publicationWatch{{cfg: p.cfg, shared: &p.memberships}}
	for i := range p.cfg.Outboxes {
		watches = append(watches, &publicationWatch{cfg: p.cfg.OutboxConfig(i), shared: &p.outboxMemberships[i]})
	}
	for i, w := range watches {
		win := in
		if i > 0 {
			win = Inspection{ServerVersion: in.ServerVersion}
		}
		if err := w.start(ctx, conn, win, at); err != nil {
			return nil, err
		}
	}
	return watches, nil
}

// setUp runs preflight and setup, and reads the slot the session will
// stream from.
func (p *Sessions) setUp(ctx context.Context, conn *pgx.Conn) (Inspection, checkpoint.SlotInfo, error) {
	in, err := Preflight(ctx, conn, p.cfg)
	if err != nil {
		return in, checkpoint.SlotInfo{}, err
	}
	if err := in.Err(); err != nil {
		return in, checkpoint.SlotInfo{}, err
	}
	for _, c := range in.Checks {
		if c.Warning && !c.OK {
			p.log.Warn().Str("check", c.Name).Str("fix", c.Fix).Msg(c.Detail)
		}
	}
	created, err := Setup(ctx, conn, p.cfg, in)
	if err != nil {
		return in, checkpoint.SlotInfo{}, err
	}
	for _, c := range created {
		p.log.Info().Str("created", c).Msg("created missing " + strings.Fields(c)[0])
	}
	slot := in.Slot
	if len(created) > 0 {
		if slot, err = checkpoint.ReadSlot(ctx, conn, p.cfg.Slot); err != nil {
			return in, slot, err
		}
	}
	if slot.ActivePID != 0 {
		return in, slot, fmt.Errorf("slot %q held by PID %d: %w", p.cfg.Slot, slot.ActivePID, outboxrelay.ErrSlotActive)
	}
	return in, slot, nil
}

// partitionLookup decides about a relation the decoder has not seen (a
// partition attached since the session started) by asking the server.
// Relation messages are rare (once per relation per session and after
// DDL), so the lookup costs nothing per row.
func (p *Sessions) partitionLookup(ctx context.Context, conn *pgx.Conn, in Inspection) replication.OutboxMatcher {
	tn := p.cfg.TableName()
	return func(relid uint32, namespace, name string, columns []string) (bool, error) {
		rel := replication.TableName{Schema: namespace, Table: name}
		// Not cancelled with the session: pgx closes a connection whose
		// query is cancelled, and the final status update's record write
		// needs it.
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
		defer cancel()
		var partition bool
		err := conn.QueryRow(qctx, `SELECT EXISTS (SELECT 1 FROM pg_partition_ancestors($1::oid::regclass) WHERE relid = $2::oid::regclass)`,
			relid, in.TableOID).Scan(&partition)
		if err != nil {
			return false, fmt.Errorf("look up whether %s is a partition of %s: %w", rel, tn, err)
		}
		if !partition && !in.PublishViaRoot && hasColumns(columns, p.cfg.Route.Columns.Required()) {
			// Today's catalog cannot tell a partition detached since its
			// rows were written from another table of the same shape, and
			// skipping it would lose those rows.
			pub := replication.QuoteIdent(p.cfg.Publication)
			return false, &outboxrelay.ConfigError{
				Problem: fmt.Sprintf("rows of %s arrived in publication %s with the outbox's columns, but %s is not a partition of %s now; it was probably detached after they were written",
					rel, pub, rel, tn),
				Fix: fmt.Sprintf("attach it again until the relay is past it (ALTER TABLE %s ATTACH PARTITION %s ...), or publish the outbox with ALTER PUBLICATION %s SET (publish_via_partition_root = true) before detaching partitions; if it is another table, stream the outbox through a publication of its own",
					tn, rel, pub),
			}
		}
		return partition, nil
	}
}

// hasColumns reports whether columns holds every name in want.
func hasColumns(columns, want []string) bool {
	for _, w := range want {
		if !slices.Contains(columns, w) {
			return false
		}
	}
	return true
}
