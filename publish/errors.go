package publish

import (
	"errors"
	"fmt"
)

// ErrInvalidPayload is returned for a payload that is not JSON: the
// relay's default outbox column is jsonb, and a message's payload member
// is JSON.
var ErrInvalidPayload = errors.New("payload is not valid JSON")

// fieldError names the Table or Event field at fault and the fix.
func fieldError(field, problem, fix string) error {
	return fmt.Errorf("publish: %s %s; %s", field, problem, fix)
}
