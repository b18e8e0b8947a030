package replication

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// pgoutput decides at decode time, from the catalog as it was at each
// change, whether a row is published. A row inserted while the outbox was
// out of the publication (dropped from it, the table dropped and
// recreated, the publication dropped or set to skip inserts) is never
// decoded, even if the slot has not moved: the stream just goes quiet. So
// the relay re-reads the publication before every confirmation, and
// confirms nothing once it has changed.

// membership is what the publication says about the outbox. Two readings
// that differ mean the outbox may have been out of it in between: a table
// dropped from a publication and added back gets a new pg_publication_rel
// row, a recreated table a new oid.
type membership struct {
	tableOID  uint32
	pubOID    uint32
	inserts   bool
	published bool
	relRows   string // the outbox's pg_publication_rel row ids
}

const membershipSQL = `
WITH t AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = $2 AND c.relname = $3)
SELECT coalesce((SELECT oid FROM t), 0)::oid, p.oid, p.pubinsert,
       EXISTS (SELECT 1 FROM pg_get_publication_tables(p.pubname::text) g, t
               WHERE g.relid = t.oid OR g.relid IN (SELECT relid FROM pg_partition_tree(t.oid))),
       coalesce((SELECT string_agg(r.oid::text, ',' ORDER BY r.oid) FROM pg_publication_rel r, t
                 WHERE r.prpubid = p.oid AND r.prrelid = t.oid), '')
FROM pg_publication p WHERE p.pubname = $1`

// publicationWatch holds the reading taken when the session started
// streaming and the last time a reading matched it.
type publicationWatch struct {
	cfg         Config
	base        membership
	verifiedAt  time.Time
	verifiedLSN outboxrelay.LSN
}

func readMembership(ctx context.Context, conn *pgx.Conn, cfg Config) (m membership, found bool, err error) {
	tn := cfg.tableName()
	err = conn.QueryRow(ctx, membershipSQL, cfg.Publication, tn.Schema, tn.Table).
		Scan(&m.tableOID, &m.pubOID, &m.inserts, &m.published, &m.relRows)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("read publication %s: %w", quoteIdent(cfg.Publication), err)
	}
	return m, true, nil
}

// start takes the session's reading at the position streaming began.
func (w *publicationWatch) start(ctx context.Context, conn *pgx.Conn, at outboxrelay.LSN) error {
	m, found, err := readMembership(ctx, conn, w.cfg)
	if err != nil {
		return err
	}
	w.verifiedAt, w.verifiedLSN = time.Now(), at
	if problem := w.judge(m, found, true); problem != "" {
		return w.lostError(problem)
	}
	w.base = m
	return nil
}

// verify re-reads the publication. Positions decoded before the call are
// covered when it returns nil: the reading is newer than all of them.
func (w *publicationWatch) verify(ctx context.Context, conn *pgx.Conn, upTo outboxrelay.LSN) error {
	m, found, err := readMembership(ctx, conn, w.cfg)
	if err != nil {
		return err
	}
	if problem := w.judge(m, found, false); problem != "" {
		return w.lostError(problem)
	}
	w.verifiedAt, w.verifiedLSN = time.Now(), max(w.verifiedLSN, upTo)
	return nil
}

// judge names what changed, or returns "".
func (w *publicationWatch) judge(m membership, found, first bool) string {
	tn, pub := w.cfg.tableName(), quoteIdent(w.cfg.Publication)
	switch {
	case !found:
		return fmt.Sprintf("publication %s no longer exists", pub)
	case m.tableOID == 0:
		return fmt.Sprintf("the outbox table %s no longer exists", tn)
	case !m.published:
		return fmt.Sprintf("the outbox table %s is no longer in publication %s", tn, pub)
	case !m.inserts:
		return fmt.Sprintf("publication %s no longer publishes inserts", pub)
	case first:
		return ""
	case m.tableOID != w.base.tableOID:
		return fmt.Sprintf("the outbox table %s was dropped and created again (its oid changed from %d to %d)", tn, w.base.tableOID, m.tableOID)
	case m.pubOID != w.base.pubOID:
		return fmt.Sprintf("publication %s was dropped and created again", pub)
	case m.relRows != w.base.relRows:
		return fmt.Sprintf("the outbox table %s was removed from publication %s and added back", tn, pub)
	}
	return ""
}

func (w *publicationWatch) lostError(problem string) error {
	tn, pub := w.cfg.tableName(), quoteIdent(w.cfg.Publication)
	return &ConfigError{
		Problem: fmt.Sprintf("%s (noticed at %s; last verified at %s, LSN %s). Rows inserted into %s after %s may never have been decoded: "+
			"pgoutput skips rows written while a table is out of the publication, and the relay stopped without confirming past LSN %s",
			problem, time.Now().UTC().Format(time.RFC3339), w.verifiedAt.UTC().Format(time.RFC3339), w.verifiedLSN,
			tn, w.verifiedAt.UTC().Format(time.RFC3339), w.verifiedLSN),
		Fix: fmt.Sprintf("put the table back (ALTER PUBLICATION %s ADD TABLE %s; or outbox-relay setup), re-publish the rows of %s inserted since %s (re-insert them with new ids, or from a backup), then restart the relay",
			pub, tn, tn, w.verifiedAt.UTC().Format(time.RFC3339)),
	}
}
