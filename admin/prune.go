package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/replication"
)

// Deleting outbox rows never affects delivery: logical decoding reads the
// inserts from the WAL, and the relay's publication publishes inserts only.
// So pruning needs no coordination with the stream; it must only be kind to
// the table and the database: short transactions (a batch each), a pause
// between them so vacuum and replicas keep up with the WAL they write, and
// an index on the age column so each batch finds its rows without scanning
// the table.

// PruneConfig says which rows prune deletes and how.
type PruneConfig struct {
	Table replication.TableName
	// Column holds each row's creation time (timestamptz, timestamp or
	// date); rows older than OlderThan by it are deleted.
	Column    string
	OlderThan time.Duration
	// Batch is the most rows one DELETE removes; Pause is the wait between
	// two of them.
	Batch int
	Pause time.Duration
	// AllowSeqscan prunes even without an index on Column: every batch then
	// scans the table.
	AllowSeqscan bool
}

// Prune defaults.
const (
	DefaultPruneBatch = 10000
	DefaultPrunePause = 100 * time.Millisecond
)

// Validate reports every field prune would refuse, joined.
func (c PruneConfig) Validate() error {
	var errs []error
	if c.Column == "" {
		errs = append(errs, errors.New("the created-at column is empty: name the column holding each row's creation time"))
	}
	if c.OlderThan <= 0 {
		errs = append(errs, fmt.Errorf("older-than %s: give a positive age, e.g. 168h or 7d", c.OlderThan))
	}
	if c.Batch <= 0 {
		errs = append(errs, fmt.Errorf("batch %d: give a positive row count (default %d)", c.Batch, DefaultPruneBatch))
	}
	if c.Pause < 0 {
		errs = append(errs, fmt.Errorf("pause %s: give 0 or a positive duration", c.Pause))
	}
	return errors.Join(errs...)
}

// PrunePlan is what the database says before anything is deleted.
type PrunePlan struct {
	// Horizon is the server's now() minus OlderThan, fixed for the whole
	// run: rows created before it are deleted.
	Horizon time.Time
	// Candidates counts the rows older than Horizon when the plan was made.
	Candidates int64
	// Indexed says an index (btree or brin, not partial) leads with Column.
	Indexed     bool
	Partitioned bool
}

// pruneFacts are the catalog facts PlanPrune judges.
type pruneFacts struct {
	tableFound  bool
	partitioned bool
	columnFound bool
	typeOK      bool
	typeName    string
	indexed     bool
}

// Type oids prune accepts for the age column.
const (
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
)

// PlanPrune reads the table's catalog facts, refuses what prune cannot do
// safely, and counts the rows older than the horizon.
func PlanPrune(ctx context.Context, conn *pgx.Conn, cfg PruneConfig) (PrunePlan, error) {
	if err := cfg.Validate(); err != nil {
		return PrunePlan{}, err
	}
	f, err := readPruneFacts(ctx, conn, cfg)
	if err != nil {
		return PrunePlan{}, err
	}
	if err := judgePrune(cfg, f); err != nil {
		return PrunePlan{}, err
	}
	p := PrunePlan{Indexed: f.indexed, Partitioned: f.partitioned}
	if err := conn.QueryRow(ctx, "SELECT now() - make_interval(secs => $1)", cfg.OlderThan.Seconds()).Scan(&p.Horizon); err != nil {
		return PrunePlan{}, fmt.Errorf("compute the prune horizon: %w", err)
	}
	q := fmt.Sprintf("SELECT count(*) FROM %s WHERE %s < $1::timestamptz", cfg.Table.SQL(), replication.QuoteIdent(cfg.Column))
	if err := conn.QueryRow(ctx, q, p.Horizon).Scan(&p.Candidates); err != nil {
		return PrunePlan{}, fmt.Errorf("count rows to prune: %w", err)
	}
	return p, nil
}

func readPruneFacts(ctx context.Context, conn *pgx.Conn, cfg PruneConfig) (pruneFacts, error) {
	var f pruneFacts
	var typ *uint32
	var typName *string
	err := conn.QueryRow(ctx, `
		SELECT c.relkind = 'p', a.attnum IS NOT NULL,
		       (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END)::oid,
		       format_type(a.atttypid, a.atttypmod),
		       EXISTS (SELECT 1 FROM pg_index i
		               JOIN pg_class ic ON ic.oid = i.indexrelid
		               JOIN pg_am am ON am.oid = ic.relam
		               WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum AND i.indpred IS NULL
		                 AND i.indisvalid AND am.amname IN ('btree', 'brin'))
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped
		LEFT JOIN pg_type t ON t.oid = a.atttypid
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`,
		cfg.Table.Schema, cfg.Table.Table, cfg.Column).Scan(&f.partitioned, &f.columnFound, &typ, &typName, &f.indexed)
	if errors.Is(err, pgx.ErrNoRows) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("read the outbox table's age column and indexes: %w", err)
	}
	f.tableFound = true
	if typ != nil {
		f.typeOK = *typ == oidTimestamptz || *typ == oidTimestamp || *typ == oidDate
	}
	if typName != nil {
		f.typeName = *typName
	}
	return f, nil
}

// judgePrune refuses a table, column or index prune cannot use.
func judgePrune(cfg PruneConfig, f pruneFacts) error {
	switch {
	case !f.tableFound:
		return fmt.Errorf("table %s does not exist (or this role cannot see it): set --table to the outbox table", cfg.Table)
	case !f.columnFound:
		return fmt.Errorf("table %s has no column %q: set --created-at-column to the column holding each row's creation time", cfg.Table, cfg.Column)
	case !f.typeOK:
		return fmt.Errorf("column %q of %s is %s: prune compares creation times, so set --created-at-column to a timestamptz, timestamp or date column", cfg.Column, cfg.Table, f.typeName)
	case !f.indexed && !cfg.AllowSeqscan:
		return &NoIndexError{Table: cfg.Table, Column: cfg.Column, Partitioned: f.partitioned}
	}
	return nil
}

// PruneIndexSQL is the statement that gives prune its index. A partitioned
// table cannot be indexed CONCURRENTLY as a whole, so it gets the plain
// statement (which locks out writes while it builds).
func PruneIndexSQL(table replication.TableName, column string, partitioned bool) string {
	name := replication.QuoteIdent(table.Table + "_" + column + "_idx")
	if partitioned {
		return fmt.Sprintf("CREATE INDEX %s ON %s (%s);", name, table.SQL(), replication.QuoteIdent(column))
	}
	return fmt.Sprintf("CREATE INDEX CONCURRENTLY %s ON %s (%s);", name, table.SQL(), replication.QuoteIdent(column))
}

// PruneBatch is one DELETE's outcome.
type PruneBatch struct {
	N       int   // 1 for the first batch
	Rows    int64 // rows it deleted
	Deleted int64 // rows deleted so far
}

// PruneResult sums up a run.
type PruneResult struct {
	Deleted  int64
	Batches  []int64
	Duration time.Duration
}

// Prune deletes the rows older than horizon, at most cfg.Batch per
// statement (each its own transaction), oldest first, pausing cfg.Pause
// between statements; progress, if not nil, is called after each. It stops
// after a batch that found fewer rows than a full one. On an error or
// cancellation it returns what it deleted so far with the error: every
// finished batch is committed.
//
// On a partitioned table a batch may delete a few more rows than cfg.Batch
// (a row's ctid is unique only within its partition), never a row newer
// than the horizon.
func Prune(ctx context.Context, conn *pgx.Conn, cfg PruneConfig, horizon time.Time, progress func(PruneBatch)) (PruneResult, error) {
	start := time.Now()
	var res PruneResult
	if err := cfg.Validate(); err != nil {
		return res, err
	}
	col := replication.QuoteIdent(cfg.Column)
	// The ctid list keeps each DELETE to one index range scan plus a TID
	// scan; the repeated horizon check keeps a reused ctid from ever
	// reaching a newer row. The horizon is an instant (timestamptz): a
	// timestamp or date column is compared in the session's time zone, as
	// its values were written, not in this process's.
	q := fmt.Sprintf(`DELETE FROM %[1]s WHERE ctid = ANY(ARRAY(SELECT ctid FROM %[1]s WHERE %[2]s < $1::timestamptz ORDER BY %[2]s LIMIT $2)) AND %[2]s < $1::timestamptz`,
		cfg.Table.SQL(), col)
	for {
		tag, err := conn.Exec(ctx, q, horizon, cfg.Batch)
		if err != nil {
			res.Duration = time.Since(start)
			return res, fmt.Errorf("delete batch %d from %s: %w", len(res.Batches)+1, cfg.Table, err)
		}
		n := tag.RowsAffected()
		res.Deleted += n
		res.Batches = append(res.Batches, n)
		if progress != nil {
			progress(PruneBatch{N: len(res.Batches), Rows: n, Deleted: res.Deleted})
		}
		if n < int64(cfg.Batch) {
			break
		}
		if err := sleep(ctx, cfg.Pause); err != nil {
			res.Duration = time.Since(start)
			return res, fmt.Errorf("prune %s: %w", cfg.Table, err)
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
