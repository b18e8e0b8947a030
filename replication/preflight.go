package replication

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	outboxrelay "github.com/outbox-relay/outbox-relay"
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

// SlotInfo is the slot as pg_replication_slots describes it.
type SlotInfo struct {
	Exists         bool
	Plugin         string
	Database       string
	ActivePID      int32
	ConfirmedFlush outboxrelay.LSN
	RestartLSN     outboxrelay.LSN
	WALStatus      string
}

// Inspection is what Preflight learned, for callers that act on it.
type Inspection struct {
	Checks            []Check
	Slot              SlotInfo
	PublicationExists bool
	ServerVersion     int
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
	return &ConfigError{Problem: strings.Join(problems, "; "), Fix: strings.Join(fixes, "; ")}
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
func Preflight(ctx context.Context, conn *pgx.Conn, cfg Config) (Inspection, error) {
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
		Name: "server_version", OK: in.ServerVersion >= 100000,
		Detail: fmt.Sprintf("server_version_num is %d", in.ServerVersion),
		Fix:    "use PostgreSQL 10 or later (14+ recommended)",
	})

	if err := checkRole(ctx, conn, add); err != nil {
		return in, err
	}
	if err := checkWALSettings(ctx, conn, cfg, add); err != nil {
		return in, err
	}

	schema, table := cfg.qualifiedTable()
	if err := checkTable(ctx, conn, cfg, schema, table, add); err != nil {
		return in, err
	}
	if err := checkPublication(ctx, conn, cfg, schema, table, &in, add); err != nil {
		return in, err
	}
	if err := checkSlot(ctx, conn, cfg, &in, add); err != nil {
		return in, err
	}
	if err := checkCapacity(ctx, conn, cfg, &in, add); err != nil {
		return in, err
	}
	return in, nil
}

func checkTable(ctx context.Context, conn *pgx.Conn, cfg Config, schema, table string, add func(Check)) error {
	rows, err := conn.Query(ctx, `
		SELECT a.attname, format_type(a.atttypid, a.atttypmod)
		FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped`, schema, table)
	if err != nil {
		return fmt.Errorf("read outbox table columns: %w", err)
	}
	types, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var v [2]string
		return v, r.Scan(&v[0], &v[1])
	})
	if err != nil {
		return fmt.Errorf("read outbox table columns: %w", err)
	}
	colType := make(map[string]string, len(types))
	for _, t := range types {
		colType[t[0]] = t[1]
	}
	qualified := schema + "." + table
	if len(colType) == 0 {
		add(Check{
			Name: "table", Detail: fmt.Sprintf("table %s does not exist", qualified),
			Fix: "create it (see testdata/outbox.sql) or set --table to the outbox table (a role that cannot see it also gets this)",
		})
		return nil
	}
	add(Check{Name: "table", OK: true, Detail: fmt.Sprintf("table %s exists", qualified)})

	want := []struct{ flag, col string }{
		{"--id-column", cfg.Columns.ID}, {"--aggregate-type-column", cfg.Columns.AggregateType},
		{"--aggregate-id-column", cfg.Columns.AggregateID}, {"--event-type-column", cfg.Columns.EventType},
		{"--payload-column", cfg.Columns.Payload}, {"--headers-column", cfg.Columns.Headers},
		{"--key-column", cfg.Columns.Resolve(cfg.Routing.KeyColumn)},
	}
	if cfg.Routing.PartitionBy != PartitionByKey {
		want = append(want, struct{ flag, col string }{"--partition-by", cfg.Columns.Resolve(cfg.Routing.PartitionBy)})
	}
	if cols, err := TemplateColumns(cfg.Routing.Topic, cfg.Columns); err == nil {
		for _, c := range cols {
			want = append(want, struct{ flag, col string }{"--topic", c})
		}
	}
	checked := map[string]bool{}
	for _, w := range want {
		if w.col == "" || checked[w.col] {
			continue
		}
		checked[w.col] = true
		typ, ok := colType[w.col]
		add(verdict(Check{
			Name: "column " + w.col, OK: ok,
			Fix: fmt.Sprintf("add the column or set %s to an existing column", w.flag),
		}, fmt.Sprintf("column %q (%s) is %s", w.col, w.flag, typ),
			fmt.Sprintf("table %s has no column %q (%s)", qualified, w.col, w.flag)))
		if ok && w.col == cfg.Columns.Payload {
			switch typ {
			case "jsonb", "json", "text", "bytea", "character varying":
			default:
				add(Check{Name: "payload type", Detail: fmt.Sprintf("payload column %q has type %s", w.col, typ),
					Fix: "use jsonb, json, text, varchar or bytea for the payload"})
			}
		}
		if ok && w.col == cfg.Columns.Headers && typ != "jsonb" && typ != "json" {
			add(Check{Name: "headers type", Detail: fmt.Sprintf("headers column %q has type %s", w.col, typ),
				Fix: "use jsonb for the headers column, or --headers-column='' to disable it"})
		}
	}
	return nil
}

func checkPublication(ctx context.Context, conn *pgx.Conn, cfg Config, schema, table string, in *Inspection, add func(Check)) error {
	var pubInsert, hasTable bool
	err := conn.QueryRow(ctx, `
		SELECT p.pubinsert,
		       EXISTS (SELECT 1 FROM pg_publication_tables t
		               WHERE t.pubname = p.pubname AND t.schemaname = $2 AND t.tablename = $3)
		FROM pg_publication p WHERE p.pubname = $1`, cfg.Publication, schema, table).Scan(&pubInsert, &hasTable)
	if errors.Is(err, pgx.ErrNoRows) {
		add(Check{
			Name: "publication", OK: cfg.Create,
			Detail: fmt.Sprintf("publication %q does not exist", cfg.Publication),
			Fix:    "run as a DBA: " + CreatePublicationSQL(cfg),
		})
		return nil
	}
	if err != nil {
		return fmt.Errorf("read publication: %w", err)
	}
	in.PublicationExists = true
	qualified := pgx.Identifier{schema, table}.Sanitize()
	add(verdict(Check{
		Name: "publication table", OK: hasTable,
		Fix: fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s;", pgx.Identifier{cfg.Publication}.Sanitize(), qualified),
	}, fmt.Sprintf("publication %q includes %s", cfg.Publication, qualified),
		fmt.Sprintf("publication %q does not include %s", cfg.Publication, qualified)))
	add(verdict(Check{
		Name: "publication inserts", OK: pubInsert,
		Fix: fmt.Sprintf("ALTER PUBLICATION %s SET (publish = 'insert');", pgx.Identifier{cfg.Publication}.Sanitize()),
	}, fmt.Sprintf("publication %q publishes inserts", cfg.Publication),
		fmt.Sprintf("publication %q does not publish inserts", cfg.Publication)))
	return nil
}

func checkSlot(ctx context.Context, conn *pgx.Conn, cfg Config, in *Inspection, add func(Check)) error {
	s, err := ReadSlot(ctx, conn, cfg.Slot)
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

// ReadSlot describes a slot; Exists is false when there is none.
func ReadSlot(ctx context.Context, conn *pgx.Conn, slot string) (SlotInfo, error) {
	var s SlotInfo
	var confirmed, restart *string
	var walStatus *string
	var pid *int32
	err := conn.QueryRow(ctx, `
		SELECT coalesce(plugin, ''), coalesce(database, ''), active_pid,
		       confirmed_flush_lsn::text, restart_lsn::text, wal_status
		FROM pg_replication_slots WHERE slot_name = $1`, slot).
		Scan(&s.Plugin, &s.Database, &pid, &confirmed, &restart, &walStatus)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read replication slot %q: %w", slot, err)
	}
	s.Exists = true
	if pid != nil {
		s.ActivePID = *pid
	}
	if walStatus != nil {
		s.WALStatus = *walStatus
	}
	if s.ConfirmedFlush, err = parseOptLSN(confirmed); err != nil {
		return s, err
	}
	if s.RestartLSN, err = parseOptLSN(restart); err != nil {
		return s, err
	}
	return s, nil
}

func parseOptLSN(s *string) (outboxrelay.LSN, error) {
	if s == nil {
		return 0, nil
	}
	return parseLSN(*s)
}

// CreatePublicationSQL is the statement the relay runs, or a DBA runs for it.
func CreatePublicationSQL(cfg Config) string {
	schema, table := cfg.qualifiedTable()
	return fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert');",
		pgx.Identifier{cfg.Publication}.Sanitize(), pgx.Identifier{schema, table}.Sanitize())
}

// CreateSlotSQL creates the slot; the publication must exist first.
func CreateSlotSQL(cfg Config) string {
	return fmt.Sprintf("SELECT pg_create_logical_replication_slot('%s', 'pgoutput');", cfg.Slot)
}

// Setup creates the publication and then the slot when they are missing
// (in that order: a slot only sees publications that existed when it
// decoded). It is idempotent. A role lacking the right gets an error with
// the SQL a DBA must run.
func Setup(ctx context.Context, conn *pgx.Conn, cfg Config, in Inspection) (created []string, err error) {
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
	return errors.As(err, &pgErr) && pgErr.Code == "42710" // duplicate_object
}

func privilegeHint(err error, sql string) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" { // insufficient_privilege
		return &ConfigError{Problem: err.Error(), Fix: "grant the role the right, or have a DBA run: " + sql}
	}
	return err
}
