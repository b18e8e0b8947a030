package inbox

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNoEventID is the cause of a record with no event id: neither the
// Config.IDHeader header nor (with Config.KeyFallback) a key. Such a
// record cannot be deduplicated, so it is dead-lettered, never applied.
var ErrNoEventID = errors.New("record has no event id")

// ErrSealed is the cause of a record whose value the relay encrypted
// (--encryption-keys) when the Consumer has no keys to open it.
var ErrSealed = errors.New("record value is encrypted and Config.Keys is nil; load the relay's key file with seal.Load")

// errHandlerPanic wraps a handler panic: a permanent failure of that record.
var errHandlerPanic = errors.New("handler panicked")

// retryable marks a handler error as worth another attempt.
type retryable struct{ err error }

func (r *retryable) Error() string { return r.err.Error() }
func (r *retryable) Unwrap() error { return r.err }

// Retryable marks err as transient: the record is rolled back and handled
// again after a backoff, up to Config.MaxAttempts. An error not marked
// (and not a serialization failure or deadlock) is permanent: the record
// goes to the dead-letter topic at once. Retryable(nil) is nil.
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return &retryable{err: err}
}

// SQLSTATEs a handler's transaction can fail with that succeed on retry.
const (
	sqlstateSerializationFailure = "40001"
	sqlstateDeadlockDetected     = "40P01"
)

// IsRetryable reports whether a handler error is worth another attempt:
// it was marked with Retryable, or Postgres aborted the transaction for a
// serialization failure or a deadlock.
func IsRetryable(err error) bool {
	var r *retryable
	if errors.As(err, &r) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == sqlstateSerializationFailure || pe.Code == sqlstateDeadlockDetected
	}
	return false
}

// configError names a Config field and the fix.
func configError(field, problem, fix string) error {
	return fmt.Errorf("inbox: Config.%s %s; %s", field, problem, fix)
}
