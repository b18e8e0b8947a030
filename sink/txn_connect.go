package sink

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/IBM/sarama"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// positionWait bounds the wait for a transaction open on the offsets topic
// at start: another relay's commit ends in milliseconds.
const positionWait = 5 * time.Second

// offsetsTopicConfig is what the offsets topic is created with: compacted,
// so it keeps each relay's latest position and stays small; segments roll
// hourly so compaction can run (the broker's 7-day default would keep every
// position of a week).
var offsetsTopicConfig = map[string]*string{
	"cleanup.policy": ptr("compact"),
	"segment.ms":     ptr("3600000"),
}

func ptr(s string) *string { return &s }

// connect makes the client, the offsets topic if it is missing, the
// transactional producer (which fences an older producer with the same
// transactional.id and has its open transaction aborted), and only then
// reads the committed position, so no transaction can still commit past
// what is read.
func (t *Txn) connect() (sarama.Client, sarama.AsyncProducer, Position, error) {
	// Every connection goes through a gate: once the transaction is
	// doomed, closing it makes sarama's retries of its records (a fenced
	// producer's PRODUCER_FENCED is one sarama retries) fail at once
	// instead of holding Run for the whole retry budget.
	g := newGate(net.Dialer{Timeout: t.cfg.Net.DialTimeout, KeepAlive: t.cfg.Net.KeepAlive})
	cfg := *t.cfg
	cfg.Net.Proxy.Enable, cfg.Net.Proxy.Dialer = true, g
	base, ceiling := cfg.Producer.Retry.Backoff, t.backoffMax
	cfg.Producer.Retry.BackoffFunc = func(retries, _ int) time.Duration {
		if g.isClosed() {
			return 0
		}
		t.metrics.retries.Inc()
		return retryBackoff(retries, base, ceiling)
	}
	cfg.Metadata.Retry.BackoffFunc = func(int, int) time.Duration {
		if g.isClosed() {
			return 0
		}
		return metadataBackoff
	}
	t.gate = g
	client, err := sarama.NewClient(t.brokers, &cfg)
	if err != nil {
		return nil, nil, Position{}, fmt.Errorf("connect to kafka: %w", err)
	}
	fail := func(err error) (sarama.Client, sarama.AsyncProducer, Position, error) {
		client.Close()
		return nil, nil, Position{}, err
	}
	if err := t.ensureOffsetsTopic(client); err != nil {
		return fail(err)
	}
	producer, err := sarama.NewAsyncProducerFromClient(client)
	if err != nil {
		return fail(fmt.Errorf("start the transactional producer: %w", t.classify(err)))
	}
	pos, err := readPosition(client, t.tx.OffsetsTopic, t.tx.PositionKey, positionWait)
	var stale *StalePositionError
	if errors.As(err, &stale) {
		t.log.Warn().Err(err).Msg("exactly-once: read the position only up to an open transaction")
		err = nil
	}
	if err != nil {
		producer.AsyncClose()
		drainClosed(producer)
		return fail(fmt.Errorf("read the committed position: %w", err))
	}
	return client, producer, pos, nil
}

// drainClosed empties a closing producer's channels.
func drainClosed(p sarama.AsyncProducer) {
	for range p.Successes() {
	}
	for range p.Errors() {
	}
}

// ensureOffsetsTopic creates the offsets topic when Kafka does not have it,
// and warns when an existing one is not compacted (it then grows forever).
func (t *Txn) ensureOffsetsTopic(client sarama.Client) error {
	admin, err := sarama.NewClusterAdmin(t.brokers, t.cfg)
	if err != nil {
		return fmt.Errorf("connect to kafka for the offsets topic: %w", err)
	}
	defer admin.Close()
	topic := t.tx.OffsetsTopic
	err = admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: -1, ConfigEntries: offsetsTopicConfig}, false)
	switch {
	case err == nil:
		t.log.Info().Str("topic", topic).Msg("exactly-once: created the offsets topic (compacted, 1 partition)")
	case errors.Is(err, sarama.ErrTopicAlreadyExists):
		t.warnIfNotCompacted(admin, topic)
	case errors.Is(err, sarama.ErrTopicAuthorizationFailed), errors.Is(err, sarama.ErrClusterAuthorizationFailed):
		return &outboxrelay.ConfigError{
			Problem: fmt.Sprintf("exactly-once: Kafka does not let the relay create its offsets topic %q (%v)", topic, err),
			Fix: fmt.Sprintf("create it: kafka-topics.sh --create --topic %s --partitions 1 --config cleanup.policy=compact --config segment.ms=3600000, "+
				"and grant the relay READ and WRITE on it", topic),
		}
	default:
		return fmt.Errorf("create the offsets topic %q: %w", topic, err)
	}
	if err := client.RefreshMetadata(topic); err != nil {
		return fmt.Errorf("find the offsets topic %q: %w", topic, err)
	}
	return nil
}

func (t *Txn) warnIfNotCompacted(admin sarama.ClusterAdmin, topic string) {
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic, ConfigNames: []string{"cleanup.policy"}})
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Name == "cleanup.policy" && !strings.Contains(e.Value, "compact") {
			t.log.Warn().Str("topic", topic).Str("cleanup.policy", e.Value).
				Msg("exactly-once: the offsets topic is not compacted; with cleanup.policy=delete the position can expire and everything after the slot is sent again; set cleanup.policy=compact")
		}
	}
}

// classify names what the operator can do about a transactional failure.
func (t *Txn) classify(err error) error {
	id := t.tx.ID
	switch {
	case isFenced(err):
		if terr := t.timedOut(err); terr != nil {
			return terr
		}
		t.metrics.fenced.Inc()
		return fmt.Errorf("%w: transactional.id %q is in use by a newer producer (another relay took over the slot): %w", ErrFenced, id, err)
	case errors.Is(err, sarama.ErrTransactionalIDAuthorizationFailed):
		return &outboxrelay.ConfigError{
			Problem: fmt.Sprintf("exactly-once: Kafka refuses transactional.id %q to the relay's principal (%v)", id, err),
			Fix:     fmt.Sprintf("grant it WRITE and DESCRIBE on TransactionalId %q (kafka-acls.sh --add --transactional-id %s --operation Write --operation Describe ...)", id, id),
		}
	case errors.Is(err, sarama.ErrConsumerCoordinatorNotAvailable), errors.Is(err, sarama.ErrNotCoordinatorForConsumer):
		return &TransactionsUnavailableError{Err: err}
	case errors.Is(err, sarama.ErrUnsupportedVersion):
		return &outboxrelay.ConfigError{
			Problem: fmt.Sprintf("exactly-once: the brokers do not support transactions (%v)", err),
			Fix:     "use Kafka 2.8 or newer, or run without --exactly-once",
		}
	}
	return err
}

// isFenced reports the broker's answers to a producer whose transactional
// id a newer producer took: its epoch is stale (PRODUCER_FENCED,
// INVALID_PRODUCER_EPOCH), or the coordinator aborted its transaction under
// it (INVALID_TXN_STATE). The broker answers the same to a transaction it
// aborted for outliving the transaction timeout: timedOut tells them apart.
func isFenced(err error) bool {
	return errors.Is(err, sarama.ErrProducerFenced) || errors.Is(err, sarama.ErrInvalidProducerEpoch) ||
		errors.Is(err, sarama.ErrInvalidTxnState)
}
