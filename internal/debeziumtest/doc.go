// Package debeziumtest holds the integration tests of issue 12, Debezium
// parity: the debezium preset and tombstones, field placement and the
// timestamp column, the CloudEvents and JSON envelopes. Each runs the
// product's relay (internal/relaytest, the one constructor) against a
// throwaway Postgres and kfake (Apache Kafka under make test-kafka) and
// reads the records back with franz-go.
package debeziumtest
