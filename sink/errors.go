package sink

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/IBM/sarama"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// ErrClosed is returned by Produce once Run is shutting down.
var ErrClosed = errors.New("sink is closed")

// errGateClosed is what a write or dial through a closed gate returns.
var errGateClosed = errors.New("sink: producer stopped sending")

// errSessionEnding fails, as retriable, what a producer would send after a
// retriable failure: the session ends at that failure and the next one
// resends from the slot, so nothing may reach Kafka ahead of it.
var errSessionEnding = errors.New("sink: not sent, an earlier record failed; the session restarts and resends it")

// DeliveryError is the final failure of one event, after sarama's retries.
type DeliveryError struct {
	EventID string
	Topic   string
	LSN     outboxrelay.LSN
	// CommitLSN is where the event's transaction commit record starts.
	CommitLSN outboxrelay.LSN
	Err       error
	// Key and Value are the refused record's, so it can be copied to a
	// dead-letter topic.
	Key, Value []byte
}

func (e *DeliveryError) Error() string {
	return fmt.Sprintf("produce event %s (lsn %s) to topic %q: %v", e.EventID, e.LSN, e.Topic, e.Err)
}

func (e *DeliveryError) Unwrap() error { return e.Err }

// undeliverable are broker answers that no retry or reconnect will change.
var undeliverable = []error{
	sarama.ErrMessageSizeTooLarge,
	sarama.ErrInvalidTopic,
	sarama.ErrMessageSetSizeTooLarge,
	sarama.ErrTopicAuthorizationFailed,
	sarama.ErrClusterAuthorizationFailed,
	sarama.ErrInvalidRecord,
	// CORRUPT_MESSAGE is retried by sarama (a record damaged on the way);
	// once its retries are spent the broker judged the record, as it does
	// a record's timestamp outside the topic's bounds.
	sarama.ErrInvalidMessage,
	sarama.ErrInvalidTimestamp,
	sarama.ErrPolicyViolation,
	sarama.ErrUnknownTopicOrPartition,
	sarama.ErrUnsupportedForMessageFormat,
	sarama.ErrInvalidRequiredAcks,
}

// IsRetriable reports whether resending the same record may succeed
// (a broker down, a leader moving, a timeout, sarama's circuit breaker, a
// topic still within its wait: a *TopicWaitError).
func IsRetriable(err error) bool {
	var tw *TopicWaitError
	if errors.As(err, &tw) {
		return true
	}
	// sarama refuses a record larger than Producer.MaxMessageBytes (or with
	// headers on a pre-0.11 protocol) before sending it, as a
	// ConfigurationError: resending the same record fails the same way.
	var ce sarama.ConfigurationError
	if errors.As(err, &ce) {
		return false
	}
	for _, u := range undeliverable {
		if errors.Is(err, u) {
			return false
		}
	}
	return true
}

// batchRefusals are the broker's judgements of a partition's record batch
// as a whole, which sarama reports on every record of it though one record
// (or the batch's size) may be the cause.
var batchRefusals = []error{
	sarama.ErrMessageSizeTooLarge,    // a record or the batch over the topic's max.message.bytes
	sarama.ErrMessageSetSizeTooLarge, // RECORD_LIST_TOO_LARGE
	sarama.ErrInvalidRecord,          // INVALID_RECORD: a null key on a compacted topic, ...
	sarama.ErrInvalidMessage,         // CORRUPT_MESSAGE, after sarama's retries
	sarama.ErrInvalidTimestamp,       // a record's timestamp outside the topic's bounds
}

// refusedByBroker reports whether err is a final refusal that may have come
// back for a whole batch (see Sink: isolation). The other final errors
// hold for every record of a topic alike (unknown, invalid or forbidden
// topic, a policy, an old message format) or come from sarama's own checks
// before sending (a ConfigurationError: too large for
// Producer.MaxMessageBytes): resending one record at a time would name no
// culprit, and stall every topic meanwhile.
func refusedByBroker(err error) bool {
	for _, r := range batchRefusals {
		if errors.Is(err, r) {
			return true
		}
	}
	return false
}

// PanicError is a panic recovered on one of the producer's goroutines. The
// producer is not trusted after it: Run stops sending, returns the error,
// and the relay reconnects with a new producer.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("kafka producer panicked: %v", e.Value)
}

// Advice names what an operator can do about an undeliverable error.
func Advice(err error) string {
	switch {
	case IsTooLarge(err):
		return "raise the topic's max.message.bytes and --kafka-max-message-bytes, or skip the event"
	case errors.Is(err, sarama.ErrUnknownTopicOrPartition):
		return "create the topic, or enable auto.create.topics.enable on the brokers"
	case errors.Is(err, sarama.ErrInvalidTopic):
		return "fix the --topic template or the row's routing column"
	case errors.Is(err, sarama.ErrInvalidMessage):
		return "Kafka finds the record corrupt (CORRUPT_MESSAGE) even alone, after every retry: check the brokers' logs, or skip the event"
	case errors.Is(err, sarama.ErrInvalidTimestamp):
		return "the record's timestamp (the event's commit time) is outside the topic's message.timestamp.*.max.ms: raise them, or skip the event"
	case errors.Is(err, sarama.ErrTopicAuthorizationFailed), errors.Is(err, sarama.ErrClusterAuthorizationFailed):
		return "grant the relay's principal WRITE (and IDEMPOTENT_WRITE) on the topic"
	default:
		return "fix the cause, or skip the event"
	}
}

// IsTooLarge reports whether err refuses a record for its size, at the
// broker or before sending it (--kafka-max-message-bytes).
func IsTooLarge(err error) bool {
	var ce sarama.ConfigurationError
	return errors.Is(err, sarama.ErrMessageSizeTooLarge) || errors.Is(err, sarama.ErrMessageSetSizeTooLarge) ||
		errors.As(err, &ce) && strings.Contains(string(ce), "MaxMessageBytes")
}

// TopicWaitError is a record's failure to a topic Kafka does not know
// (UNKNOWN_TOPIC_OR_PARTITION after sarama's metadata retries) while the
// topic has been missing for less than Config.TopicWait: it may still be
// being created (auto-create on a slow controller, a first record to a new
// routed topic). It is retriable: the session ends and the next one
// resends the record from the slot. Once the topic has been missing for
// TopicWait the record's failure is final (undeliverable).
type TopicWaitError struct {
	Topic string
	// Missing is how long the topic has been missing, Left how much of
	// the wait remains.
	Missing, Left time.Duration
	Err           error // sarama's error
}

func (e *TopicWaitError) Error() string {
	return fmt.Sprintf("topic %q does not exist (yet): missing for %s, waiting %s more for it to be created before the event counts as undeliverable; "+
		"create it, or enable auto.create.topics.enable on the brokers", e.Topic, roundWait(e.Missing), roundWait(e.Left))
}

func (e *TopicWaitError) Unwrap() error { return e.Err }

// ErrFenced means a newer producer with the same transactional.id started
// (another relay took the slot over): this one may write nothing more. The
// relay waits as a hot standby instead of fencing it back.
var ErrFenced = errors.New("exactly-once producer fenced")

// TransactionsUnavailableError is Kafka answering that it has no
// transaction coordinator: its transaction state log
// (__transaction_state) cannot be created or has no leader, typically a
// cluster with fewer brokers than transaction.state.log.replication.factor
// (3 by default). The session retries; the message names the fix.
type TransactionsUnavailableError struct{ Err error }

func (e *TransactionsUnavailableError) Error() string {
	return fmt.Sprintf("exactly-once: Kafka has no transaction coordinator (%v): its transaction state log is not available. "+
		"On a cluster with fewer brokers than transaction.state.log.replication.factor (default 3), set it and "+
		"transaction.state.log.min.isr to what the cluster can hold and restart the brokers; or run without --exactly-once", e.Err)
}

func (e *TransactionsUnavailableError) Unwrap() error { return e.Err }

// StalePositionError says the exactly-once position was read only up to a
// transaction still open on the offsets topic (another relay's, or one
// hanging there) when the read gave up waiting for it: the position below
// it is used, and events a later position of this relay's covers may be
// sent again. Nothing is lost.
type StalePositionError struct {
	Topic     string
	Partition int32
	LSO, End  int64
}

func (e *StalePositionError) Error() string {
	return fmt.Sprintf("offsets topic %q partition %d: a transaction open at offset %d (of %d) did not end; using the position below it, "+
		"so some events may be sent twice (if it hangs, kafka-transactions.sh --find-hanging / abort ends it)", e.Topic, e.Partition, e.LSO, e.End)
}
