// Package kafkatest gives integration tests, the demo binary and
// benchmarks a Kafka broker, and reads topics back with an independent
// client.
//
// # Two brokers, one test body
//
// The relay's Kafka sink is verified end to end against a real protocol
// implementation rather than a mock of the producer API. In `make test`
// the broker is franz-go's kfake, in process: Start launches a
// single-broker kfake cluster on 127.0.0.1 with topic auto-creation, and
// with Options.DataDir the cluster persists to disk so Restart can
// simulate a broker bounce on the same address without losing data.
// Cluster exposes the underlying kfake.Cluster for fault injection (Fault,
// ControlKey).
//
// In `make test-kafka` (OUTBOX_RELAY_APACHE_KAFKA=1) New gives the same
// tests Apache Kafka instead (internal/apachekafka; the release is
// $OUTBOX_RELAY_KAFKA_VERSION or apachekafka.DefaultVersion): a
// single-node KRaft cluster with topic auto-creation, shared by the test
// package and started on first use, one per partition count, since
// num.partitions is static broker configuration. Main, called from the
// package's TestMain, closes them after the tests. Tests share a cluster
// one at a time: New waits until the previous test's broker is closed
// (its t.Cleanup), then deletes every topic left over and starts the node
// again if the test left it stopped, so each test starts from an empty
// broker as with kfake. (A subtest of the test holding the cluster shares
// it, and its topics.) Restart stops the node gracefully and starts it
// again on the same ports and data. Options.Port is kfake-only.
//
// What only kfake can do must be explicit: a test that injects faults
// through Cluster calls RequireKfake first, which skips it on Apache Kafka
// with the reason (Cluster panics there otherwise). The faults a real
// cluster has (kills, elections, lost replicas, limits, security) are
// tested against Apache Kafka in internal/kafkafault.
//
// # Reading back
//
// ReadAll and Count deliberately use their own franz-go client, separate
// from the producer under test, so assertions see what the broker stored,
// not what the producer believes it sent. ReadAll reads from the start of
// every partition without a consumer group, at read_committed isolation.
//
// The core API returns errors and does not need *testing.T; New is the thin
// helper for tests that registers Close with t.Cleanup.
package kafkatest
