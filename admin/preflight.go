package admin

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/checkpoint"
	"github.com/outbox-relay/outbox-relay/internal/pgerr"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/route"
)

// Check is one preflight finding. A failed check that is not a warning stops
// the relay from starting; Fix says what to change.
type Check struct {
	Name    string
	OK      bool
	Warning bool // a risk worth knowing, not a reason to refuse
	Detail  string
	Fix     string
}

// Inspection is what Preflight learned, for callers that act on it.
type Inspection struct {
	Checks            []Check
	Slot              checkpoint.SlotInfo
	PublicationExists bool
	ServerVersion     int
	// TableOID is the outbox's; Relations are it and, for a partitioned
	// outbox, all its partitions (the ids pgoutput may name its rows by).
	TableOID    uint32
	Partitioned bool
	Relations   []uint32
	// PublishViaRoot is the publication's publish_via_partition_root.
	PublishViaRoot bool
}

// Failed returns the checks that stop the relay.
func (in Inspection) Failed() []Check {
	var out []Check
	for _, c := range in.Checks {
		if !c.OK && !c.Warning {
			out = append(out, c)
		}
	}
	return out
}

// Err turns the failed checks into one ConfigError naming each fix.
func (in Inspection) Err() error {
	failed := in.Failed()
	if len(failed) == 0 {
		return nil
	}
	var problems, fixes []string
	for _, c := range failed {
		problems = append(problems, c.Detail)
		fixes = append(fixes, c.Fix)
	}
	return &outboxrelay.ConfigError{Problem: strings.Join(problems, "; "), Fix: strings.Join(fixes, "; ")}
}

// verdict fills c.Detail with the sentence that matches its outcome.
func verdict(c Check, pass, fail string) Check {
	c.Detail = fail
	if c.OK {
		c.Detail = pass
	}
	return c
}

// Preflight inspects the server for cfg without changing anything. A missing
// publication or slot fails its check only when cfg.Create is off: the
// relay creates them itself otherwise.
func Preflight(ctx context.Context, conn *pgx.Conn, cfg replication.Config) (Inspection, error) {
	var in Inspection
	add := func(c Check) { in.Checks = append(in.Checks, c) }

	var walLevel string
	if err := conn.QueryRow(ctx, "SELECT current_setting('wal_level'), current_setting('server_version_num')::int").Scan(&walLevel, &in.ServerVersion); err != nil {
		return in, fmt.Errorf("read server settings: %w", err)
	}
	add(Check{
		Name: "wal_level", OK: walLevel == "logical",
		Detail: fmt.Sprintf("wal_level is '%s'", walLevel),
		Fix:    "set wal_level=logical (ALTER SYSTEM SET wal_level = logical) and restart Postgres",
	})
	add(Check{
		Name: "server_version", OK: in.ServerVersion >= 130000,
		Detail: fmt.Sprintf("server_version_num is %d", in.ServerVersion),
		Fix:    "use PostgreSQL 13 or later (14+ recommended): partitioned outboxes need publish_via_partition_root",
	})
	if in.ServerVersion < 130000 {
		return in, nil
	}

	if err := checkRole(ctx, conn, add); err != nil {
		return in, err
	}
	if err := checkWALSettings(ctx, conn, cfg, add); err != nil {
		return in, err
	}

	tn := cfg.TableName()
	if !cfg.TableLess() {
		if err := checkTable(ctx, conn, cfg, tn, &in, add); err != nil {
			return in, err
		}
	}
	// The slot before the publication: a missing publication may be
	// created only for a slot that does not exist yet.
	if err := checkSlot(ctx, conn, cfg, &in, add); err != nil {
		return in, err
	}
	if err := checkPublication(ctx, conn, cfg, tn, &in, add); err != nil {
		return in, err
	}
	if err := checkOutboxes(ctx, conn, cfg, in, add); err != nil {
		return in, err
	}
	if err := checkCapacity(ctx, conn, cfg, &in, add); err != nil {
		return in, err
	}
	return in, nil
}

// Base type OIDs preflight accepts for the payload and headers columns.
// Compared by type, not by format_type's display name, which spells
// varchar(2000) as "character varying(2000)".
const (
	oidJSON    = 114
	oidJSONB   = 3802
	oidText    = 25
	oidVarchar = 1043
	oidBytea   = 17
)

// PublicationChecks runs the table and publication checks alone, for
// `status`: whether the publication carries the outbox (its root or its
// partitions) and its inserts.
func PublicationChecks(ctx context.Context, conn *pgx.Conn, cfg replication.Config) ([]Check, error) {
	in := Inspection{}
	cfg.Create = false // status reports a missing publication, whoever would create it
	add := func(c Check) { in.Checks = append(in.Checks, c) }
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&in.ServerVersion); err != nil {
		return nil, fmt.Errorf("read server version: %w", err)
	}
	tn := cfg.TableName()
	if !cfg.TableLess() {
		if err := checkTable(ctx, conn, cfg, tn, &in, add); err != nil {
			return nil, err
		}
	}
	if err := checkPublication(ctx, conn, cfg, tn, &in, add); err != nil {
		return nil, err
	}
	if err := checkOutboxes(ctx, conn, cfg, in, add); err != nil {
		return nil, err
	}
	return in.Checks, nil
}

// outboxRelation is the outbox as the catalog has it now.
type outboxRelation struct {
	oid     uint32
	relkind string
	// relations are the outbox and, when partitioned, all its partitions:
	// the ids pgoutput may name its rows by.
	relations []uint32
}

// lookupOutbox finds the outbox by its exact catalog names; found is false
// when there is no such relation.
func lookupOutbox(ctx context.Context, conn *pgx.Conn, tn replication.TableName) (r outboxRelation, found bool, err error) {
	err = conn.QueryRow(ctx, `
		SELECT c.oid, c.relkind::text,
		       array(SELECT c.oid UNION SELECT relid::oid FROM pg_partition_tree(c.oid) WHERE c.relkind = 'p')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2`, tn.Schema, tn.Table).Scan(&r.oid, &r.relkind, &r.relations)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("look up outbox table %s: %w", tn, err)
	}
	return r, true, nil
}

// checkTable records the outbox's oid and relations in `in`.
func checkTable(ctx context.Context, conn *pgx.Conn, cfg replication.Config, tn replication.TableName, in *Inspection, add func(Check)) error {
	r, found, err := lookupOutbox(ctx, conn, tn)
	if err != nil {
		return err
	}
	if !found {
		add(Check{
			Name: "table", Detail: fmt.Sprintf("table %s does not exist", tn),
			Fix: "create it (see testdata/outbox.sql) or set --table to the outbox table; quote a name the way it is stored, e.g. --table '\"Sales\".\"Outbox Events\"' (a role that cannot see it also gets this)",
		})
		return nil
	}
	if r.relkind != "r" && r.relkind != "p" {
		add(Check{Name: "table", Detail: fmt.Sprintf("%s is not a table (relkind %q)", tn, r.relkind),
			Fix: "point --table at the outbox table itself, not a view or another kind of relation"})
		return nil
	}
	in.TableOID, in.Partitioned, in.Relations = r.oid, r.relkind == "p", r.relations
	detail := fmt.Sprintf("table %s exists", tn)
	if in.Partitioned {
		detail += fmt.Sprintf(" (partitioned, %d partitions)", len(r.relations)-1)
	}
	add(Check{Name: "table", OK: true, Detail: detail})
	return checkColumns(ctx, conn, cfg, tn, in.TableOID, add)
}

type colInfo struct {
	display string
	base    uint32 // the type, or a domain's base type
}

func checkColumns(ctx context.Context, conn *pgx.Conn, cfg replication.Config, tn replication.TableName, oid uint32, add func(Check)) error {
	rows, err := conn.Query(ctx, `
		SELECT a.attname, format_type(a.atttypid, a.atttypmod),
		       (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END)::oid
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`, oid)
	if err != nil {
		return fmt.Errorf("read outbox table columns: %w", err)
	}
	cols := map[string]colInfo{}
	var name string
	var c colInfo
	if _, err := pgx.ForEachRow(rows, []any{&name, &c.display, &c.base}, func() error {
		cols[name] = c
		return nil
	}); err != nil {
		return fmt.Errorf("read outbox table columns: %w", err)
	}
	rt, columns := cfg.Route, cfg.Route.Columns
	want := []struct{ flag, col string }{
		{"--id-column", columns.ID}, {"--aggregate-type-column", columns.AggregateType},
		{"--aggregate-id-column", columns.AggregateID}, {"--event-type-column", columns.EventType},
		{"--payload-column", columns.Payload}, {"--headers-column", columns.Headers},
		{"--key-column", columns.Resolve(rt.KeyColumn)},
	}
	if rt.PartitionBy != route.PartitionByKey {
		want = append(want, struct{ flag, col string }{"--partition-by", columns.Resolve(rt.PartitionBy)})
	}
	if names, err := route.TemplateColumns(rt.Topic, columns); err == nil {
		for _, c := range names {
			want = append(want, struct{ flag, col string }{"--topic", c})
		}
	}
	for _, f := range rt.Fields {
		want = append(want, struct{ flag, col string }{"--field " + f.String(), f.Column})
	}
	if rt.TimestampColumn != "" && (!rt.TimestampOptional || cols[rt.TimestampColumn] != (colInfo{})) {
		want = append(want, struct{ flag, col string }{"--timestamp-column", rt.TimestampColumn})
	}
	checked := map[string]bool{}
	for _, w := range want {
		if w.col == "" || checked[w.col] {
			continue
		}
		checked[w.col] = true
		typ, ok := cols[w.col]
		add(verdict(Check{
			Name: "column " + w.col, OK: ok,
			Fix: fmt.Sprintf("add the column or set %s to an existing column", w.flag),
		}, fmt.Sprintf("column %q (%s) is %s", w.col, w.flag, typ.display),
			fmt.Sprintf("table %s has no column %q (%s)", tn, w.col, w.flag)))
		if ok && w.col == columns.Payload {
			switch typ.base {
			case oidJSONB, oidJSON, oidText, oidBytea, oidVarchar:
			default:
				add(Check{Name: "payload type", Detail: fmt.Sprintf("payload column %q has type %s", w.col, typ.display),
					Fix: "use jsonb, json, text, varchar or bytea for the payload"})
			}
		}
		if ok && w.col == columns.Headers && typ.base != oidJSONB && typ.base != oidJSON {
			add(Check{Name: "headers type", Detail: fmt.Sprintf("headers column %q has type %s", w.col, typ.display),
				Fix: "use jsonb for the headers column, or --headers-column='' to disable it"})
		}
	}
	return nil
}

// checkPublication reads the outbox's membership in the publication the
// way the publication watch does: the publication must publish the outbox
// itself, or every leaf partition of a partitioned outbox (a DBA's list of
// some partitions would silently leave out the others).
func checkPublication(ctx context.Context, conn *pgx.Conn, cfg replication.Config, tn replication.TableName, in *Inspection, add func(Check)) error {
	m, found, err := readMembership(ctx, conn, cfg, in.ServerVersion, 0)
	if err != nil {
		return err
	}
	pub := replication.QuoteIdent(cfg.Publication)
	if !found {
		if in.Slot.Exists {
			// pgoutput looks publications up as of each change it decodes:
			// a publication created now is unknown to the slot's older WAL,
			// and the server fails every session with "publication does
			// not exist".
			add(Check{
				Name:   "publication",
				Detail: fmt.Sprintf("publication %s does not exist, but slot %q does: a publication created now is unknown to the WAL the slot still has to decode", pub, cfg.Slot),
				Fix: fmt.Sprintf("if it was renamed, rename it back (ALTER PUBLICATION <name> RENAME TO %s); otherwise create it (%s), move the slot past its creation (outbox-relay slot advance --to <the LSN after it>), and re-publish the rows inserted since the slot's position %s",
					pub, CreatePublicationSQL(cfg), in.Slot.ConfirmedFlush),
			})
			return nil
		}
		add(Check{
			Name: "publication", OK: cfg.Create,
			Detail: fmt.Sprintf("publication %s does not exist", pub),
			Fix:    "run as a DBA: " + CreatePublicationSQL(cfg),
		})
		return nil
	}
	in.PublicationExists, in.PublishViaRoot = true, m.viaRoot
	if cfg.TableLess() {
		// Logical messages reach every publication's stream: no table to
		// cover, no inserts to publish.
		add(Check{Name: "publication", OK: true, Detail: fmt.Sprintf("publication %s exists (table-less outbox: logical messages only)", pub)})
		return nil
	}
	add(verdict(Check{
		Name: "publication table", OK: m.covered,
		Fix: fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s;", pub, tn),
	}, fmt.Sprintf("publication %s includes %s", pub, tn),
		fmt.Sprintf("publication %s does not include %s (neither the table nor every one of its partitions)", pub, tn)))
	add(verdict(Check{
		Name: "publication inserts", OK: m.inserts,
		Fix: fmt.Sprintf("ALTER PUBLICATION %s SET (publish = 'insert');", pub),
	}, fmt.Sprintf("publication %s publishes inserts", pub),
		fmt.Sprintf("publication %s does not publish inserts", pub)))
	if in.Partitioned && !m.viaRoot {
		add(Check{
			Name: "publication partitions", Warning: true,
			Detail: fmt.Sprintf("publication %s publishes %s's rows under its partitions' names (publish_via_partition_root is off); the relay maps them to the outbox, and stops at rows of a partition detached before it read them", pub, tn),
			Fix:    fmt.Sprintf("ALTER PUBLICATION %s SET (publish_via_partition_root = true);", pub),
		})
	}
	if in.ServerVersion >= 150000 {
		return checkPublicationFilters(ctx, conn, cfg, tn, in, add)
	}
	return nil
}

// checkPublicationFilters reports a PG15 row filter or column list on the
// outbox: rows a filter excludes are never decoded, so never delivered.
func checkPublicationFilters(ctx context.Context, conn *pgx.Conn, cfg replication.Config, tn replication.TableName, in *Inspection, add func(Check)) error {
	var filter, columns *string
	err := conn.QueryRow(ctx, `
		SELECT string_agg(pg_get_expr(r.prqual, r.prrelid), ' / '),
		       string_agg((SELECT string_agg(a.attname, ', ' ORDER BY a.attnum) FROM pg_attribute a
		                   WHERE a.attrelid = r.prrelid AND a.attnum = ANY(r.prattrs)), ' / ')
		FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
		WHERE p.pubname = $1 AND r.prrelid = ANY($2::oid[])`, cfg.Publication, in.Relations).Scan(&filter, &columns)
	if err != nil {
		return fmt.Errorf("read publication row filter and column list: %w", err)
	}
	pub := replication.QuoteIdent(cfg.Publication)
	if filter != nil {
		add(Check{Name: "publication row filter", Warning: true,
			Detail: fmt.Sprintf("publication %s publishes only the rows of %s WHERE %s: the others never reach Kafka", pub, tn, *filter),
			Fix:    fmt.Sprintf("if every row must be delivered: ALTER PUBLICATION %s SET TABLE %s;", pub, tn)})
	}
	if columns != nil {
		add(Check{Name: "publication column list", Warning: true,
			Detail: fmt.Sprintf("publication %s publishes only columns (%s) of %s; a configured column outside it stops the relay", pub, *columns, tn),
			Fix:    fmt.Sprintf("to publish every column: ALTER PUBLICATION %s SET TABLE %s;", pub, tn)})
	}
	return nil
}

func checkSlot(ctx context.Context, conn *pgx.Conn, cfg replication.Config, in *Inspection, add func(Check)) error {
	s, err := checkpoint.ReadSlot(ctx, conn, cfg.Slot)
	if err != nil {
		return err
	}
	in.Slot = s
	if !s.Exists {
		add(Check{
			Name: "slot", OK: cfg.Create,
			Detail: fmt.Sprintf("replication slot %q does not exist", cfg.Slot),
			Fix:    "run as a DBA: " + CreateSlotSQL(cfg),
		})
		return nil
	}
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		return fmt.Errorf("read current database: %w", err)
	}
	add(verdict(Check{
		Name: "slot plugin", OK: s.Plugin == "pgoutput",
		Fix: fmt.Sprintf("use another --slot, or drop this one if nothing needs it: SELECT pg_drop_replication_slot('%s');", cfg.Slot),
	}, fmt.Sprintf("replication slot %q uses pgoutput", cfg.Slot),
		fmt.Sprintf("replication slot %q uses plugin %q, not pgoutput", cfg.Slot, s.Plugin)))
	add(verdict(Check{
		Name: "slot database", OK: s.Database == db,
		Fix: "use another --slot name for this database",
	}, fmt.Sprintf("replication slot %q belongs to database %q", cfg.Slot, db),
		fmt.Sprintf("replication slot %q belongs to database %q, not %q", cfg.Slot, s.Database, db)))
	add(verdict(Check{
		Name: "slot wal_status", OK: s.WALStatus != "lost",
		Fix: "see docs/operations.md, 'Slot lost': recover the gap from the outbox table, then drop and recreate the slot",
	}, fmt.Sprintf("replication slot %q has wal_status %q", cfg.Slot, s.WALStatus),
		fmt.Sprintf("replication slot %q has wal_status 'lost': the WAL it needed was removed and events are gone from it", cfg.Slot)))
	return nil
}

// CreatePublicationSQL is the statement the relay runs, or a DBA runs for it.
// publish_via_partition_root makes a partitioned outbox's rows arrive under
// its own name, whatever partition holds them, now and after new
// partitions are attached.
func CreatePublicationSQL(cfg replication.Config) string {
	if cfg.TableLess() {
		// pgoutput needs a publication to start; a table-less outbox's
		// messages reach it without any table.
		return fmt.Sprintf("CREATE PUBLICATION %s WITH (publish = 'insert');", replication.QuoteIdent(cfg.Publication))
	}
	tables := []string{cfg.TableName().String()}
	for i := range cfg.Outboxes {
		tables = append(tables, cfg.OutboxConfig(i).TableName().String())
	}
	return fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert', publish_via_partition_root = true);",
		replication.QuoteIdent(cfg.Publication), strings.Join(tables, ", "))
}

// checkOutboxes runs the table, column and publication checks for each of
// cfg.Outboxes. They are matched by name, so a partitioned one whose rows
// the publication sends under its partitions' names would be lost: that
// fails, where it only warns for the first outbox (which is matched by
// its partitions' ids too).
func checkOutboxes(ctx context.Context, conn *pgx.Conn, cfg replication.Config, in Inspection, add func(Check)) error {
	for i := range cfg.Outboxes {
		oc := cfg.OutboxConfig(i)
		tn := oc.TableName()
		oin := Inspection{ServerVersion: in.ServerVersion}
		if err := checkTable(ctx, conn, oc, tn, &oin, add); err != nil {
			return err
		}
		if !in.PublicationExists {
			continue // created with every outbox, via the root
		}
		m, _, err := readMembership(ctx, conn, oc, in.ServerVersion, 0)
		if err != nil {
			return err
		}
		pub := replication.QuoteIdent(cfg.Publication)
		add(verdict(Check{Name: "publication table", OK: m.covered, Fix: fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s;", pub, tn)},
			fmt.Sprintf("publication %s includes %s", pub, tn),
			fmt.Sprintf("publication %s does not include %s (neither the table nor every one of its partitions)", pub, tn)))
		if oin.Partitioned && !m.viaRoot {
			add(Check{Name: "publication partitions",
				Detail: fmt.Sprintf("publication %s publishes %s's rows under its partitions' names, and outboxes after the first are matched by name only", pub, tn),
				Fix:    fmt.Sprintf("ALTER PUBLICATION %s SET (publish_via_partition_root = true);", pub)})
		}
	}
	return nil
}

// CreateSlotSQL creates the slot; the publication must exist first.
func CreateSlotSQL(cfg replication.Config) string {
	return fmt.Sprintf("SELECT pg_create_logical_replication_slot('%s', 'pgoutput');", cfg.Slot)
}

// Setup creates the publication and then the slot when they are missing
// (in that order: a slot only sees publications that existed when it
// decoded). It is idempotent. A role lacking the right gets an error with
// the SQL a DBA must run.
func Setup(ctx context.Context, conn *pgx.Conn, cfg replication.Config, in Inspection) (created []string, err error) {
	if !in.PublicationExists {
		if _, err := conn.Exec(ctx, strings.TrimSuffix(CreatePublicationSQL(cfg), ";")); err != nil && !isDuplicate(err) {
			return created, privilegeHint(fmt.Errorf("create publication %q: %w", cfg.Publication, err), CreatePublicationSQL(cfg))
		}
		created = append(created, "publication "+cfg.Publication)
	}
	if !in.Slot.Exists {
		if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", cfg.Slot); err != nil && !isDuplicate(err) {
			return created, privilegeHint(fmt.Errorf("create replication slot %q: %w", cfg.Slot, err), CreateSlotSQL(cfg))
		}
		created = append(created, "slot "+cfg.Slot)
	}
	return created, nil
}

func isDuplicate(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerr.DuplicateObject
}

func privilegeHint(err error, sql string) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerr.InsufficientPrivilege {
		return &outboxrelay.ConfigError{Problem: err.Error(), Fix: "grant the role the right, or have a DBA run: " + sql}
	}
	return err
}

// CheckpointCheck is the preflight finding for the checkpoint table: it
// exists, or this role may create it.
func CheckpointCheck(ctx context.Context, conn *pgx.Conn) (Check, error) {
	var exists, canCreate bool
	err := conn.QueryRow(ctx, `
		SELECT to_regclass($1) IS NOT NULL,
		       CASE WHEN to_regnamespace('outbox_relay') IS NULL
		            THEN has_database_privilege(current_database(), 'CREATE')
		            ELSE has_schema_privilege('outbox_relay', 'CREATE') END`, checkpoint.Table).Scan(&exists, &canCreate)
	if err != nil {
		return Check{}, fmt.Errorf("look up %s: %w", checkpoint.Table, err)
	}
	return Check{
		Name: "checkpoint table", OK: exists || canCreate,
		Detail: fmt.Sprintf("the relay's checkpoint table %s is missing and this role may not create it", checkpoint.Table),
		Fix:    "have a DBA run the SQL of `outbox-relay setup --print-sql` and grant the role SELECT, INSERT, UPDATE, DELETE on " + checkpoint.Table,
	}, nil
}
