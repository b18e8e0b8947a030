package inbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// sqlstateUndefinedTable is what a missing inbox table fails with.
const sqlstateUndefinedTable = "42P01"

// checkTable fails early, naming the fix, when the inbox table is missing.
func (c *Consumer) checkTable(ctx context.Context) error {
	_, err := c.cfg.DB.Exec(ctx, "SELECT consumer_group, event_id, topic, kafka_partition, kafka_offset, applied_at FROM "+c.table+" LIMIT 0")
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == sqlstateUndefinedTable {
		return fmt.Errorf("inbox table %s does not exist; create it with inbox.CreateSchema or testdata/inbox.sql", c.table)
	}
	if err != nil {
		return fmt.Errorf("check the inbox table %s: %w", c.table, err)
	}
	return nil
}

// prune deletes ids older than Retention every PruneInterval until ctx
// ends. A failed round is logged and tried again next interval: stale ids
// cost disk, never correctness.
func (c *Consumer) prune(ctx context.Context) error {
	if c.cfg.Retention < 0 {
		return nil
	}
	t := time.NewTicker(c.cfg.PruneInterval)
	defer t.Stop()
	for {
		if _, err := c.Prune(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn().Err(err).Msg("prune the inbox; trying again next interval")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Prune deletes this group's ids applied more than Config.Retention ago
// (by the database clock), PruneBatch rows per statement so no statement
// holds many locks or a long transaction, and returns how many it
// deleted. Run calls it every PruneInterval; any goroutine may call it.
func (c *Consumer) Prune(ctx context.Context) (int64, error) {
	if c.cfg.Retention < 0 {
		return 0, nil
	}
	q := "DELETE FROM " + c.table + ` WHERE ctid IN (SELECT ctid FROM ` + c.table + `
		WHERE consumer_group = $1 AND applied_at < now() - make_interval(secs => $2) LIMIT $3)`
	var total int64
	for {
		tag, err := c.cfg.DB.Exec(ctx, q, c.cfg.Group, c.cfg.Retention.Seconds(), c.cfg.PruneBatch)
		if err != nil {
			return total, fmt.Errorf("prune ids older than %s from %s: %w", c.cfg.Retention, c.table, err)
		}
		total += tag.RowsAffected()
		c.m.pruned.Add(float64(tag.RowsAffected()))
		if tag.RowsAffected() < int64(c.cfg.PruneBatch) {
			return total, nil
		}
	}
}
