package replication

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rs/zerolog"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// messageBuffer is how many decoded messages may wait for the relay. They
// are not yet counted by the tracker's caps, so memory is bounded by those
// caps plus this many rows: keep it small, it only smooths the handoff.
const messageBuffer = 32

// finalStatusTimeout bounds the last status update at shutdown.
const finalStatusTimeout = 5 * time.Second

// Stream reads one replication session. Create one per connection attempt:
// Run may be called once.
type Stream struct {
	cfg     Config
	prep    Preparer
	log     zerolog.Logger
	metrics *Metrics
	out     chan Message
	started chan struct{} // closed once the server streams

	// confirmed is the one high-water mark: the highest position the relay
	// asked to confirm. Run's goroutine reads it before each status update.
	confirmed atomic.Uint64
	// position is the slot's confirmed_flush_lsn when streaming started.
	position atomic.Uint64
	// record and sent are Run's goroutine's own: the plan's hook, and the
	// last position a status update carried.
	record func(ctx context.Context, want outboxrelay.LSN) (outboxrelay.LSN, error)
	sent   outboxrelay.LSN
	// delivered is the plan's Delivered: events of transactions committed
	// below it are not handed on.
	delivered outboxrelay.LSN
}

// New validates cfg and returns a Stream that prepares each session with
// prep; it connects to nothing.
func New(cfg Config, prep Preparer, opts ...Option) (*Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("replication config: %w", err)
	}
	if prep == nil {
		return nil, errors.New("replication: a Preparer is required")
	}
	s := &Stream{cfg: cfg, prep: prep, log: zerolog.Nop(), out: make(chan Message, messageBuffer), started: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	return s, nil
}

// Streaming is closed once replication has started.
func (s *Stream) Streaming() <-chan struct{} { return s.started }

// Messages delivers the stream in WAL order. It is closed when Run returns.
func (s *Stream) Messages() <-chan Message { return s.out }

// Confirm raises the position the next status update asks the plan's
// Record hook for. Call it only with a position every earlier event is
// acked behind; lower values are ignored. Safe from any goroutine; it does
// no I/O.
func (s *Stream) Confirm(lsn outboxrelay.LSN) {
	for {
		cur := s.confirmed.Load()
		if uint64(lsn) <= cur || s.confirmed.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// StartPosition is the slot's confirmed position when streaming began; zero
// before that.
func (s *Stream) StartPosition() outboxrelay.LSN { return outboxrelay.LSN(s.position.Load()) }

// Run prepares the session (the Preparer's checks, setup and slot reading)
// and streams until ctx ends or the connection fails. On ctx end it sends a
// final status update with the confirmed position before closing, so a
// graceful restart resends nothing. It returns nil after a graceful stop,
// ErrSlotActive (wrapped) while another process holds the slot, a
// *ConfigError for problems that need a human, and any other error for
// failures worth a retry.
func (s *Stream) Run(ctx context.Context) error {
	defer close(s.out)
	plan, err := s.prep.Prepare(ctx)
	if err != nil {
		return err
	}
	if plan.Close != nil {
		defer plan.Close()
	}
	s.record = plan.Record
	if plan.Delivered > plan.Start {
		s.delivered = plan.Delivered
		s.log.Info().Str("slot_lsn", plan.Start.String()).Str("record_lsn", plan.Delivered.String()).
			Msg("the slot is behind the relay's record (Postgres restarted before saving it): events of transactions committed below the record were delivered and are not sent again")
	}
	conn, err := s.connectReplication(ctx)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), finalStatusTimeout)
		defer cancel()
		conn.Close(cctx)
	}()

	args := []string{"proto_version '1'", publicationNamesArg(s.cfg.Publication)}
	if plan.ServerVersion >= 140000 {
		args = append(args, "messages 'true'")
	} else if s.cfg.MessagePrefix != "" {
		return &outboxrelay.ConfigError{
			Problem: fmt.Sprintf("--message-prefix needs PostgreSQL 14 or later (pgoutput's messages option); the server is %d", plan.ServerVersion),
			Fix:     "upgrade Postgres, or write the events into an outbox table instead",
		}
	}
	if err := pglogrepl.StartReplication(ctx, conn, s.cfg.Slot, plan.Start, pglogrepl.StartReplicationOptions{PluginArgs: args}); err != nil {
		return classifyStartError(s.cfg.Slot, err)
	}
	s.Confirm(plan.Start)
	s.sent = plan.Start
	s.position.Store(uint64(plan.Start))
	close(s.started)
	s.log.Info().Str("slot", s.cfg.Slot).Str("lsn", plan.Start.String()).Msg("streaming")

	err = s.stream(ctx, conn, NewOutboxMatcher(s.cfg.TableName(), plan.Relations, plan.Lookup))
	if ctx.Err() == nil {
		return err
	}
	// Graceful stop: the relay confirmed its last ack before cancelling.
	fctx, cancel := context.WithTimeout(context.Background(), finalStatusTimeout)
	defer cancel()
	if err := s.sendStatus(fctx, conn, false); err != nil {
		return fmt.Errorf("send final status update: %w", err)
	}
	if err := endCopy(conn); err != nil {
		s.log.Warn().Err(err).Msg("end replication after the final status update; the server may resend a little")
	}
	s.log.Info().Str("lsn", s.sent.String()).Msg("final status update sent")
	return nil
}

// endCopy ends COPY BOTH and waits for the server's CopyDone, which it sends
// only after reading everything before it, the final status included.
// Regression: closing right after the status, with unread WAL data in our
// socket buffer, made the kernel reset the connection, and the walsender
// could drop the unread status: a graceful restart then resent
// transactions that Kafka had acked.
func endCopy(conn *pgconn.PgConn) error {
	// The receive loop's cancellation pulled the read deadline to now.
	if err := conn.Conn().SetDeadline(time.Now().Add(finalStatusTimeout)); err != nil {
		return err
	}
	conn.Frontend().Send(&pgproto3.CopyDone{})
	if err := conn.Frontend().Flush(); err != nil {
		return fmt.Errorf("send CopyDone: %w", err)
	}
	for {
		msg, err := conn.Frontend().Receive()
		if err != nil {
			return fmt.Errorf("wait for the server's CopyDone: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyDone, *pgproto3.ReadyForQuery:
			return nil
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(m)
		}
		// CopyData still in flight: the relay stopped reading, drop it.
	}
}

// NewOutboxMatcher matches tn by name and the relations by id; lookup, when
// not nil, decides (once) about any other relation id.
func NewOutboxMatcher(tn TableName, relations []uint32, lookup OutboxMatcher) OutboxMatcher {
	known := make(map[uint32]bool, len(relations))
	for _, id := range relations {
		known[id] = true
	}
	return func(relid uint32, namespace, name string, columns []string) (bool, error) {
		if namespace == tn.Schema && name == tn.Table {
			return true, nil
		}
		if outbox, ok := known[relid]; ok || lookup == nil {
			return outbox, nil
		}
		outbox, err := lookup(relid, namespace, name, columns)
		if err == nil {
			known[relid] = outbox
		}
		return outbox, err
	}
}

func (s *Stream) connectReplication(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(s.cfg.ConnString)
	if err != nil {
		return nil, &outboxrelay.ConfigError{Problem: fmt.Sprintf("parse --pg-url: %v", err), Fix: "use a libpq URL like postgres://user:pass@host:5432/db"}
	}
	cfg.RuntimeParams["replication"] = "database"
	// pgoutput renders values with the walsender's output functions: ISO
	// dates are what a timestamp column (route.Config.TimestampColumn) is
	// parsed as, whatever the server's default DateStyle.
	cfg.RuntimeParams["datestyle"] = "ISO, MDY"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open replication connection: %w", err)
	}
	return conn, nil
}

// stream is the receive loop. It returns ctx.Err() on cancellation.
func (s *Stream) stream(ctx context.Context, conn *pgconn.PgConn, match OutboxMatcher) error {
	dec, err := NewDecoder(s.cfg, func(kind string) { s.metrics.skipped.WithLabelValues(kind).Inc() })
	if err != nil {
		return err
	}
	dec.MatchOutbox(match)
	// The read deadline is the socket's, set only when the status timer
	// moves, and cancellation pulls it to now: a context per message (what
	// ReceiveMessage(ctx) needs) cost a tenth of the relay's CPU in a
	// backlog drain (docs/benchmarks.md).
	pulled := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = conn.Conn().SetReadDeadline(time.Now())
		close(pulled)
	})
	defer func() {
		// A callback already running must finish before the caller sets
		// deadlines of its own (the final status update, endCopy).
		if !stop() {
			<-pulled
		}
	}()
	var deadline time.Time
	next := time.Now().Add(s.cfg.StatusInterval)
	for {
		if !time.Now().Before(next) {
			// Asking for a reply makes the server answer with a keepalive
			// carrying its WAL end, which lets an idle slot move even when
			// wal_sender_timeout is 0 and the server never asks.
			if err := s.sendStatus(ctx, conn, true); err != nil {
				return err
			}
			next = time.Now().Add(s.cfg.StatusInterval)
		}
		if !next.Equal(deadline) {
			deadline = next
			if err := conn.Conn().SetReadDeadline(deadline); err != nil {
				return fmt.Errorf("set replication read deadline: %w", err)
			}
			// Cancellation may have pulled the deadline in just before.
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		raw, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receive replication message: %w", err)
		}
		switch m := raw.(type) {
		case *pgproto3.CopyData:
			if err := s.handle(ctx, conn, dec, m.Data, &next); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return classifyStreamError(s.cfg, pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyDone:
			return errors.New("replication: server ended the stream")
		}
	}
}

func (s *Stream) handle(ctx context.Context, conn *pgconn.PgConn, dec *Decoder, data []byte, next *time.Time) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("parse keepalive: %w", err)
		}
		s.metrics.lastMessage.SetToCurrentTime()
		s.metrics.receivedLSN.Set(float64(ka.ServerWALEnd))
		if ka.ReplyRequested {
			if err := s.sendStatus(ctx, conn, false); err != nil {
				return err
			}
			*next = time.Now().Add(s.cfg.StatusInterval)
		}
		// Inside a transaction the WAL end can lie past rows not yet
		// received; only between transactions is it a safe barrier.
		if !dec.InTransaction() {
			return s.emit(ctx, conn, Message{Kind: KindKeepalive, LSN: ka.ServerWALEnd}, next)
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("parse XLogData: %w", err)
		}
		msg, ok, err := dec.Decode(xld.WALStart, xld.WALData)
		if err != nil {
			return err
		}
		s.metrics.receivedLSN.Set(float64(xld.WALStart))
		if ok {
			if msg.Kind == KindEvent {
				now := time.Now()
				s.metrics.lastMessage.Set(float64(now.UnixNano()) / 1e9)
				if msg.Event.CommitLSN < s.delivered {
					s.metrics.skipped.WithLabelValues(SkippedDelivered).Inc()
					return nil
				}
				// Clocks of two hosts: a skew must not make it negative.
				s.metrics.commitToReceive.Observe(max(now.Sub(msg.Event.CommitTime), 0).Seconds())
			}
			return s.emit(ctx, conn, msg, next)
		}
	}
	return nil
}

// emit hands m to the relay. While the relay pushes back (its in-flight cap
// is reached), the stream stops reading but keeps sending status updates so
// wal_sender_timeout does not end the session.
func (s *Stream) emit(ctx context.Context, conn *pgconn.PgConn, m Message, next *time.Time) error {
	select {
	case s.out <- m:
		return nil
	default:
	}
	for {
		timer := time.NewTimer(time.Until(*next))
		select {
		case s.out <- m:
			timer.Stop()
			return nil
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
			if err := s.sendStatus(ctx, conn, false); err != nil {
				return err
			}
			*next = time.Now().Add(s.cfg.StatusInterval)
		}
	}
}

// sendStatus reports the confirmed position: what the relay asked for, once
// the plan's Record hook has made it durable. Only Run's goroutine sends.
func (s *Stream) sendStatus(ctx context.Context, conn *pgconn.PgConn, reply bool) error {
	lsn := s.sent
	if want := outboxrelay.LSN(s.confirmed.Load()); want > lsn {
		lsn = want
		if s.record != nil {
			got, err := s.record(ctx, want)
			if err != nil {
				return err
			}
			lsn = max(min(got, want), s.sent)
		}
	}
	err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: lsn,
		WALFlushPosition: lsn,
		WALApplyPosition: lsn,
		ReplyRequested:   reply,
	})
	if err != nil {
		return fmt.Errorf("send standby status update: %w", err)
	}
	s.sent = lsn
	s.metrics.statusUpdates.Inc()
	s.metrics.confirmedLSN.Set(float64(lsn))
	return nil
}
