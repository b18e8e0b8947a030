// Package outboxrelay holds the domain types shared by every part of
// outbox-relay: the Event that travels from a Postgres outbox row to a Kafka
// record, and the WAL position (LSN) that orders them.
//
// # Delivery contract
//
// An outbox row committed in Postgres reaches Kafka at least once, and the
// replication slot's confirmed position (confirmed_flush_lsn) moves past a
// transaction only after Kafka has acknowledged every event of that
// transaction and of every transaction committed before it. Consequences:
//
//   - Nothing committed is lost: a crash, a lost connection or a failed
//     produce makes Postgres resend from the confirmed position.
//   - Events of one aggregate keep their commit order: they hash to one
//     partition and the producer is idempotent with one request in flight.
//   - Duplicates appear only after a failure, and only for the unconfirmed
//     tail. Consumers deduplicate on the "id" header (the outbox row's id).
//
// The package has no I/O; replication, sink, checkpoint and relay implement
// the pipeline, and cmd/outbox-relay wires it to flags.
package outboxrelay
