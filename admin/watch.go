package admin

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/checkpoint"
	"github.com/outbox-relay/outbox-relay/replication"
)

// pgoutput decides at decode time, from the catalog as it was at each
// change, whether a row is published. A row inserted while the outbox was
// out of the publication (dropped from it, the table dropped and
// recreated, the publication dropped or set to skip inserts) is never
// decoded, even if the slot has not moved: the stream just goes quiet. So
// the relay re-reads the publication before every confirmation, and
// confirms nothing once it has changed.

// membership is what the catalog says about the outbox and its
// publication. Two readings whose identity differs mean the outbox may
// have been out of the publication in between, even if it is back: a table
// dropped from a publication and added back gets a new pg_publication_rel
// row (a schema, a new pg_publication_namespace row), a recreated table a
// new oid, and any ALTER PUBLICATION ... SET (publish = ...) a new xmin on
// the publication's row.
type membership struct {
	tableOID  uint32
	renamedTo string // the earlier reading's table, if it now has another name
	pubOID    uint32
	pubXmin   string
	inserts   bool
	viaRoot   bool
	// covered: the publication publishes the outbox itself, or every leaf
	// partition of a partitioned outbox.
	covered bool
	relRows string // pg_publication_rel row ids of the outbox and its partitions
	nspRows string // pg_publication_namespace row ids of its schema (PG15+)
}

// identity is what must not change between two readings.
func (m membership) identity() string {
	return fmt.Sprintf("%d/%d/%s/%s/%s", m.tableOID, m.pubOID, m.pubXmin, m.relRows, m.nspRows)
}

// membershipSQL reads a membership; $1 publication, $2 schema, $3 table,
// $4 the oid of an earlier reading (0 for none), to name a renamed table.
// %s is the schema-publication term, which only PG15+ has.
const membershipSQL = `
WITH t AS (SELECT c.oid, c.relkind, c.relnamespace FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = $2 AND c.relname = $3),
     tree AS (SELECT oid AS relid FROM t
              UNION SELECT x.relid FROM t, pg_partition_tree(t.oid) x WHERE t.relkind = 'p'),
     leaves AS (SELECT x.relid FROM t, pg_partition_tree(t.oid) x WHERE t.relkind = 'p' AND x.isleaf),
     g AS (SELECT gp.relid FROM pg_publication p0, pg_get_publication_tables(p0.pubname::text) gp WHERE p0.pubname = $1)
SELECT coalesce((SELECT oid FROM t), 0)::oid,
       coalesce((SELECT array[n.nspname::text, c.relname::text] FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.oid = $4::oid), '{}'),
       p.oid, p.xmin::text, p.pubinsert, p.pubviaroot,
       EXISTS (SELECT 1 FROM t) AND (EXISTS (SELECT 1 FROM g, t WHERE g.relid = t.oid)
           OR ((SELECT relkind FROM t) = 'p' AND NOT EXISTS (SELECT 1 FROM leaves WHERE relid NOT IN (SELECT relid FROM g)))),
       coalesce((SELECT string_agg(r.oid::text, ',' ORDER BY r.oid) FROM pg_publication_rel r
                 WHERE r.prpubid = p.oid AND r.prrelid IN (SELECT relid FROM tree)), ''),
       %s
FROM pg_publication p WHERE p.pubname = $1`

const schemaPublicationPG15 = `coalesce((SELECT string_agg(pn.oid::text, ',' ORDER BY pn.oid) FROM pg_publication_namespace pn, t
                 WHERE pn.pnpubid = p.oid AND pn.pnnspid = t.relnamespace), '')`

// readMembership reads the outbox's membership in cfg's publication; found
// is false when the publication does not exist. prev is an earlier
// reading's table oid, or 0.
func readMembership(ctx context.Context, conn *pgx.Conn, cfg replication.Config, serverVersion int, prev uint32) (m membership, found bool, err error) {
	nsp := "''"
	if serverVersion >= 150000 {
		nsp = schemaPublicationPG15
	}
	tn := cfg.TableName()
	var renamed []string
	err = conn.QueryRow(ctx, fmt.Sprintf(membershipSQL, nsp), cfg.Publication, tn.Schema, tn.Table, prev).
		Scan(&m.tableOID, &renamed, &m.pubOID, &m.pubXmin, &m.inserts, &m.viaRoot, &m.covered, &m.relRows, &m.nspRows)
	if len(renamed) == 2 {
		m.renamedTo = replication.TableName{Schema: renamed[0], Table: renamed[1]}.String()
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return m, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("read publication %s: %w", replication.QuoteIdent(cfg.Publication), err)
	}
	return m, true, nil
}

// memberships keeps the last verified reading for every session of one
// relay process, so a change that happens while the relay reconnects (a
// Kafka outage confirms nothing, so checks nothing, until the session
// ends) is still noticed by the next session.
type memberships struct {
	mu   sync.Mutex
	last *membership
}

func (ms *memberships) get() *membership {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.last
}

func (ms *memberships) set(m membership) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.last = &m
}

// publicationWatch checks one session's publication against the reading
// taken when it started streaming (or an earlier session's).
type publicationWatch struct {
	cfg           replication.Config
	shared        *memberships
	serverVersion int
	base          membership
	verifiedAt    time.Time
	verifiedLSN   outboxrelay.LSN
}

// start takes the session's reading before replication starts at the
// slot's position.
func (w *publicationWatch) start(ctx context.Context, conn *pgx.Conn, in Inspection, at outboxrelay.LSN) error {
	if w.cfg.TableLess() {
		// No table to leave the publication; a dropped publication fails
		// the stream itself.
		return nil
	}
	w.serverVersion = in.ServerVersion
	prev := w.shared.get()
	prevOID := in.TableOID
	if prev != nil {
		w.base = *prev
		prevOID = prev.tableOID
	}
	m, found, err := readMembership(ctx, conn, w.cfg, w.serverVersion, prevOID)
	if err != nil {
		return err
	}
	w.verifiedAt, w.verifiedLSN = time.Now(), at
	if err := w.judge(m, found, prev == nil); err != nil {
		return err
	}
	w.base = m
	w.shared.set(m)
	return nil
}

// verify re-reads the publication. Positions decoded before the call are
// covered when it returns nil: the reading is newer than all of them.
func (w *publicationWatch) verify(ctx context.Context, conn *pgx.Conn, upTo outboxrelay.LSN) error {
	if w.cfg.TableLess() {
		return nil
	}
	m, found, err := readMembership(ctx, conn, w.cfg, w.serverVersion, w.base.tableOID)
	if err != nil {
		return err
	}
	if err := w.judge(m, found, false); err != nil {
		return err
	}
	w.verifiedAt, w.verifiedLSN = time.Now(), max(w.verifiedLSN, upTo)
	w.shared.set(m)
	return nil
}

// judge returns a *ConfigError naming what changed, or nil.
func (w *publicationWatch) judge(m membership, found, first bool) error {
	tn, pub := w.cfg.TableName(), replication.QuoteIdent(w.cfg.Publication)
	var problem string
	switch {
	case !found:
		problem = fmt.Sprintf("publication %s no longer exists", pub)
	case m.tableOID == 0 && m.renamedTo != "":
		return &outboxrelay.ConfigError{
			Problem: fmt.Sprintf("the outbox table %s was renamed to %s; its rows are still published, and the relay stopped so as not to follow a table it was not told about", tn, m.renamedTo),
			Fix:     fmt.Sprintf("set --table to %s (or rename it back) and restart; nothing needs re-publishing", m.renamedTo),
		}
	case m.tableOID == 0:
		problem = fmt.Sprintf("the outbox table %s no longer exists", tn)
	case !m.covered:
		problem = fmt.Sprintf("publication %s no longer publishes the outbox table %s (neither the table nor every one of its partitions)", pub, tn)
	case !m.inserts:
		problem = fmt.Sprintf("publication %s no longer publishes inserts", pub)
	case first || m.identity() == w.base.identity():
		return nil
	case m.tableOID != w.base.tableOID:
		problem = fmt.Sprintf("the outbox table %s was dropped and created again (its oid changed from %d to %d)", tn, w.base.tableOID, m.tableOID)
	case m.pubOID != w.base.pubOID:
		problem = fmt.Sprintf("publication %s was dropped and created again", pub)
	case m.pubXmin != w.base.pubXmin:
		problem = fmt.Sprintf("publication %s was altered (ALTER PUBLICATION ... SET) since the relay verified it, and may have stopped publishing inserts in between", pub)
	default:
		problem = fmt.Sprintf("the outbox table %s (or its partitions or schema) was removed from publication %s and added back", tn, pub)
	}
	return w.lostError(problem)
}

func (w *publicationWatch) lostError(problem string) error {
	tn, pub := w.cfg.TableName(), replication.QuoteIdent(w.cfg.Publication)
	since := w.verifiedAt.UTC().Format(time.RFC3339)
	return &checkpoint.HaltError{Err: &outboxrelay.ConfigError{
		Problem: fmt.Sprintf("%s (noticed at %s; last verified at %s, LSN %s). Rows inserted into %s after %s may never have been decoded: "+
			"pgoutput skips rows written while a table is out of the publication, and the relay stopped without confirming past LSN %s",
			problem, time.Now().UTC().Format(time.RFC3339), since, w.verifiedLSN, tn, since, w.verifiedLSN),
		Fix: fmt.Sprintf("put the table back (ALTER PUBLICATION %s ADD TABLE %s; or outbox-relay setup), re-publish the rows of %s inserted since %s (re-insert them with new ids, or from a backup), then start the relay once with --accept-gap",
			pub, tn, tn, since),
	}}
}
