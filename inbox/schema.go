package inbox

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// maxIdentLen is Postgres' NAMEDATALEN-1: longer names are truncated.
const maxIdentLen = 63

// tableIdent parses Config.Table: a name or schema.name, as written (no
// case folding: "Inbox" is the table "Inbox").
func tableIdent(table string) (pgx.Identifier, error) {
	parts := strings.Split(table, ".")
	if len(parts) > 2 {
		return nil, configError("Table", fmt.Sprintf("is %q", table), "use a name or schema.name")
	}
	for _, p := range parts {
		if p == "" || len(p) > maxIdentLen {
			return nil, configError("Table", fmt.Sprintf("is %q", table), fmt.Sprintf("use names of 1 to %d bytes", maxIdentLen))
		}
	}
	return pgx.Identifier(parts), nil
}

// SchemaSQL returns the DDL of the inbox table named table (a name or
// schema.name): testdata/inbox.sql for the default. One row per applied
// event and consumer group; the index serves pruning by age.
func SchemaSQL(table string) (string, error) {
	stmts, err := schemaStatements(table)
	if err != nil {
		return "", err
	}
	return strings.Join(stmts, ";\n") + ";\n", nil
}

func schemaStatements(table string) ([]string, error) {
	id, err := tableIdent(table)
	if err != nil {
		return nil, err
	}
	index := pgx.Identifier{id[len(id)-1] + "_applied_at_idx"}.Sanitize()
	return []string{
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
    consumer_group  text        NOT NULL,
    event_id        text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
)`, id.Sanitize()),
		fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s (consumer_group, applied_at)", index, id.Sanitize()),
	}, nil
}

// CreateSchema creates the inbox table named table (and its index) if
// missing; it is safe to call on every start.
func CreateSchema(ctx context.Context, db DB, table string) error {
	stmts, err := schemaStatements(table)
	if err != nil {
		return err
	}
	for _, stmt := range stmts {
		if _, err := db.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("create inbox table %q: %w", table, err)
		}
	}
	return nil
}
