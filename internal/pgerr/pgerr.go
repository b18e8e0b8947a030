// Package pgerr names the SQLSTATEs outbox-relay tells apart, so no code
// compares a Postgres error against a bare literal.
package pgerr

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// SQLSTATEs, from the PostgreSQL manual's appendix A.
const (
	UndefinedObject       = "42704"
	DuplicateObject       = "42710"
	InsufficientPrivilege = "42501"
	ObjectInUse           = "55006" // "replication slot ... is active for PID n"
	UniqueViolation       = "23505"
	UndefinedTable        = "42P01"
	UndefinedFunction     = "42883"
)

// Is reports whether err is a Postgres error with SQLSTATE code.
func Is(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}
