// Package publish is the producer half of the outbox pattern for Go
// applications: one call writes an event inside the application's own pgx
// transaction, so the event exists exactly when the business change
// commits, and outbox-relay streams it to Kafka.
//
// Table.Insert writes a row into an outbox table, with the same column
// mapping the relay reads (route.Columns: rename columns once, in both
// places). Message writes a transactional logical decoding message, the
// table-less outbox the relay reads with --message-prefix, with the
// content route.Messages expects. Both return the event id, which
// consumers (package inbox) deduplicate on.
//
// Functions here only run SQL on the transaction they are given; they are
// safe for concurrent use on different transactions.
package publish
