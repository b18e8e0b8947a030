package route

import (
	"fmt"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// UnmappableError means an outbox row cannot become a Kafka record as
// configured (a NULL id, a NULL payload, a topic name Kafka would refuse).
// The row is in the WAL and stays there until an operator decides.
type UnmappableError struct {
	Reason string
}

func (e *UnmappableError) Error() string { return e.Reason }

func configErr(problem, fixFormat string, args ...any) error {
	return &outboxrelay.ConfigError{Problem: problem, Fix: fmt.Sprintf(fixFormat, args...)}
}
