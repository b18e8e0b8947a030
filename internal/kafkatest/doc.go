// Package kafkatest runs an in-process Kafka-protocol broker (franz-go's
// kfake) for integration tests, the demo binary and benchmarks, and reads
// topics back with an independent client.
//
// The relay's Kafka sink is verified end to end against a real protocol
// implementation rather than a mock of the producer API: Start launches a
// single-broker kfake cluster on 127.0.0.1 with topic auto-creation, and
// with Options.DataDir the cluster persists to disk so Restart can simulate
// a broker bounce on the same address without losing data. Cluster exposes
// the underlying kfake.Cluster for fault injection (Fault, ControlKey).
//
// ReadAll and Count deliberately use their own franz-go client, separate
// from the producer under test, so assertions see what the broker stored,
// not what the producer believes it sent. ReadAll reads from the start of
// every partition without a consumer group, at read_committed isolation.
//
// The core API returns errors and does not need *testing.T; New is the thin
// helper for tests that registers Close with t.Cleanup.
package kafkatest
