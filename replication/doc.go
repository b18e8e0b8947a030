// Package replication owns the Postgres side: preflight checks, publication
// and slot setup, and the logical replication stream that turns pgoutput
// inserts on the outbox table into Events.
//
// One goroutine, Stream.Run, owns the replication connection: it receives
// messages, sends standby status updates on its own timer (and when the
// server asks, and once more at shutdown), and hands decoded Messages to
// the relay in WAL order. Confirm only raises the position those updates
// carry; the relay calls it with the checkpoint tracker's safe position and
// nothing else.
//
// The decoder speaks pgoutput protocol version 1. It maps columns by name
// from each Relation message, so adding a column to the outbox table while
// the relay runs is harmless, and it skips (and counts) updates, deletes,
// truncates and logical decoding messages such as the relay's heartbeats.
package replication
