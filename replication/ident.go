package replication

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// TableName is the outbox table as the server names it: schema and table
// exactly as stored in the catalog (case and spaces kept).
type TableName struct {
	Schema, Table string
}

// ParseTable reads --table. Each part is taken as written (no case
// folding), or double-quoted SQL-style, which is how a name holding a dot
// is written: `Sales.Outbox Events` and `"Sales"."Outbox Events"` name the
// same table, and `"a.b".c` is table c in schema a.b. The schema defaults
// to public.
func ParseTable(s string) (TableName, error) {
	parts, err := splitQualified(s)
	if err != nil {
		return TableName{}, fmt.Errorf("table %q: %w", s, err)
	}
	switch len(parts) {
	case 1:
		return TableName{Schema: "public", Table: parts[0]}, nil
	case 2:
		return TableName{Schema: parts[0], Table: parts[1]}, nil
	}
	return TableName{}, fmt.Errorf("table %q has %d dot-separated parts; write schema.table, and double-quote a name that holds a dot", s, len(parts))
}

// splitQualified splits at dots outside double quotes; a quoted part may
// hold "" for a quote.
func splitQualified(s string) ([]string, error) {
	var parts []string
	var cur strings.Builder
	quoted, wasQuoted := false, false
	flush := func() error {
		if cur.Len() == 0 && !wasQuoted {
			return fmt.Errorf("empty name part; write schema.table")
		}
		parts = append(parts, cur.String())
		cur.Reset()
		wasQuoted = false
		return nil
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '"' && i+1 < len(s) && s[i+1] == '"':
			cur.WriteByte('"')
			i++
		case quoted && c == '"':
			quoted = false
			if i+1 < len(s) && s[i+1] != '.' {
				return nil, fmt.Errorf("unexpected %q after a closing double quote", s[i+1:])
			}
		case quoted:
			cur.WriteByte(c)
		case c == '"' && cur.Len() == 0 && !wasQuoted:
			quoted, wasQuoted = true, true
			if i+1 < len(s) && s[i+1] == '"' && (i+2 == len(s) || s[i+2] == '.') {
				return nil, fmt.Errorf("empty quoted name")
			}
		case c == '"':
			return nil, fmt.Errorf("a double quote inside an unquoted name; quote the whole part")
		case c == '.':
			if err := flush(); err != nil {
				return nil, err
			}
		default:
			cur.WriteByte(c)
		}
	}
	if quoted {
		return nil, fmt.Errorf("unclosed double quote")
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return parts, nil
}

// SQL is the table as an SQL identifier, quoted for any name.
func (t TableName) SQL() string { return pgx.Identifier{t.Schema, t.Table}.Sanitize() }

// String is the SQL form, for messages: it reads the same as what a user
// pastes into psql.
func (t TableName) String() string { return t.SQL() }

// QuoteIdent quotes one identifier for SQL text (publication names in
// statements we print or run).
func QuoteIdent(name string) string { return pgx.Identifier{name}.Sanitize() }

// publicationNamesArg is the publication_names plugin option of
// START_REPLICATION. The server parses its value like an identifier list
// (SplitIdentifierString): an unquoted name is case-folded and split at
// commas, so the name goes in double quotes, and the whole option value in
// single quotes with any quote doubled.
func publicationNamesArg(name string) string {
	return "publication_names '" + strings.ReplaceAll(QuoteIdent(name), "'", "''") + "'"
}
