package inbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outbox-relay/outbox-relay/seal"
)

// outcome is how one attempt at a record ended.
type outcome int

const (
	applied       outcome = iota // committed with its id
	duplicate                    // its id was already in the inbox: skipped
	handlerFailed                // the handler (or its transaction) failed
	dbFailed                     // the inbox's own database work failed
)

// handleRecord applies rec once, or dead-letters it, and reports whether
// its offset may be marked. sess ends when the partition is revoked or
// the consumer stops; work, ShutdownTimeout later. false means the record
// was left for the partition's next owner (the session ended first).
func (c *Consumer) handleRecord(sess, work context.Context, dlq sarama.SyncProducer, rec *sarama.ConsumerMessage) bool {
	msg, err := c.message(rec)
	if err != nil {
		cause := "no_event_id"
		if !errors.Is(err, ErrNoEventID) {
			cause = "decrypt"
		}
		return c.deadLetter(sess, dlq, rec, err, cause, 0)
	}
	attempt, dbAttempt := 1, 0
	for {
		msg.Attempt = attempt
		out, err := c.apply(work, msg)
		switch {
		case out == applied || out == duplicate:
			return true
		case work.Err() != nil:
			return false // past ShutdownTimeout: rolled back, re-delivered later
		case out == dbFailed:
			dbAttempt++
			c.m.dbRetries.Inc()
			c.recordLog(msg).Warn().Err(err).Msg("inbox database work failed; retrying the record")
			if !sleep(sess, c.backoff(dbAttempt)) {
				return false
			}
		case IsRetryable(err) && attempt < c.cfg.MaxAttempts:
			c.m.retries.WithLabelValues(msg.Topic).Inc()
			c.recordLog(msg).Warn().Err(err).Int("attempt", attempt).Msg("handler failed retryably; retrying after a backoff")
			if !sleep(sess, c.backoff(attempt)) {
				return false
			}
			attempt++
		default:
			cause := "permanent"
			if IsRetryable(err) {
				cause = "attempts_exhausted"
			}
			return c.deadLetter(sess, dlq, rec, err, cause, attempt)
		}
	}
}

// apply is one attempt: begin, insert the id, the handler, commit.
func (c *Consumer) apply(ctx context.Context, msg Message) (outcome, error) {
	start := time.Now()
	tx, err := c.cfg.DB.Begin(ctx)
	if err != nil {
		return dbFailed, fmt.Errorf("begin the record's transaction: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // after Commit: ErrTxClosed
	tag, err := tx.Exec(ctx, c.insertSQL(), c.cfg.Group, msg.ID, msg.Topic, msg.Partition, msg.Offset)
	if err != nil {
		return dbFailed, fmt.Errorf("insert the event id into %s: %w", c.table, err)
	}
	if tag.RowsAffected() == 0 {
		c.m.skipped.WithLabelValues(msg.Topic).Inc()
		c.recordLog(msg).Debug().Msg("event already applied; skipped")
		return duplicate, nil
	}
	if err := c.callHandler(ctx, tx, msg); err != nil {
		return handlerFailed, err
	}
	if err := tx.Commit(ctx); err != nil {
		var pe *pgconn.PgError
		if errors.Is(err, pgx.ErrTxClosed) {
			// Retrying cannot help: every attempt would end the same way.
			return handlerFailed, fmt.Errorf("the handler committed or rolled back the inbox's transaction itself "+
				"(leave that to the inbox; write through the tx it passes): %w", err)
		}
		if errors.Is(err, pgx.ErrTxCommitRollback) || errors.As(err, &pe) {
			// The handler left the transaction failed (an error it
			// swallowed), or Postgres refused the commit (serialization).
			return handlerFailed, fmt.Errorf("commit the handler's transaction: %w", err)
		}
		return dbFailed, fmt.Errorf("commit the record's transaction: %w", err)
	}
	c.m.processed.WithLabelValues(msg.Topic).Inc()
	c.m.latency.WithLabelValues(msg.Topic).Observe(time.Since(start).Seconds())
	return applied, nil
}

func (c *Consumer) insertSQL() string {
	return "INSERT INTO " + c.table + ` (consumer_group, event_id, topic, kafka_partition, kafka_offset)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`
}

// callHandler turns a handler panic into a permanent failure of the record.
func (c *Consumer) callHandler(ctx context.Context, tx pgx.Tx, msg Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errHandlerPanic, r)
		}
	}()
	return c.cfg.Handler(ctx, tx, msg)
}

// message builds the handler's view of rec: its event id and its value,
// decrypted when sealed.
func (c *Consumer) message(rec *sarama.ConsumerMessage) (Message, error) {
	msg := Message{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset,
		Key: rec.Key, Value: rec.Value, Timestamp: rec.Timestamp}
	for _, h := range rec.Headers {
		if h != nil {
			msg.Headers = append(msg.Headers, Header{Key: string(h.Key), Value: h.Value})
		}
	}
	if id, ok := recordHeader(rec, c.cfg.IDHeader); ok && len(id) > 0 {
		msg.ID = string(id)
	} else if c.cfg.KeyFallback && len(rec.Key) > 0 {
		msg.ID = string(rec.Key)
	} else {
		return msg, fmt.Errorf("%w: no %q header%s", ErrNoEventID, c.cfg.IDHeader, map[bool]string{true: " and no key", false: ""}[c.cfg.KeyFallback])
	}
	if _, sealed := recordHeader(rec, seal.HeaderAlgorithm); !sealed {
		return msg, nil
	}
	if c.cfg.Keys == nil {
		return msg, ErrSealed
	}
	v, err := c.cfg.Keys.OpenRecord(func(name string) ([]byte, bool) { return recordHeader(rec, name) }, rec.Value)
	if err != nil {
		return msg, fmt.Errorf("decrypt the record value: %w", err)
	}
	msg.Value = v
	return msg, nil
}

// backoff is Backoff doubled per earlier attempt, capped at MaxBackoff.
func (c *Consumer) backoff(attempt int) time.Duration {
	d := c.cfg.Backoff
	for i := 1; i < attempt && d < c.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, c.cfg.MaxBackoff)
}
