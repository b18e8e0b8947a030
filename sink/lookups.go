package sink

import (
	"errors"
	"fmt"

	"github.com/IBM/sarama"
	"github.com/eapache/go-resiliency/breaker"
)

// topicErrors are final errors about a whole topic, whatever the record.
var topicErrors = []error{
	sarama.ErrUnknownTopicOrPartition,
	sarama.ErrInvalidTopic,
	sarama.ErrTopicAuthorizationFailed,
	sarama.ErrClusterAuthorizationFailed,
}

// maxTopicFailures bounds topicFailures; past it the record starts over.
const maxTopicFailures = 1000

// topicFailures remembers, per topic, the last error that failed one of
// its records, to name what sarama's circuit breaker stands for. After
// three failed lookups of a topic sarama fails its later records for 10 s
// with a retriable "circuit breaker is open", without looking again: more
// than three records to a topic that does not exist (auto-create off)
// ended the session at the fourth, and every session after it, dead-
// lettering three at a time. A record failed that way while the topic's
// last failure was final for the topic is reported with that failure. It
// is used on Run's goroutine only.
type topicFailures map[string]error

// succeeded forgets topic's failures.
func (f topicFailures) succeeded(topic string) {
	if len(f) > 0 {
		delete(f, topic)
	}
}

// failed notes err for topic and returns the error to report: err, or the
// topic's last final error when err is the breaker's.
func (f topicFailures) failed(topic string, err error) error {
	if !errors.Is(err, breaker.ErrBreakerOpen) {
		if len(f) >= maxTopicFailures {
			clear(f)
		}
		f[topic] = err
		return err
	}
	if last := f[topic]; last != nil && isTopicError(last) {
		return fmt.Errorf("%w (the producer stopped looking the topic up after repeated failures)", last)
	}
	return err
}

func isTopicError(err error) bool {
	for _, t := range topicErrors {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
