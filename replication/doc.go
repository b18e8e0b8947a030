// Package replication owns the Postgres side: preflight checks, publication
// and slot setup, and the logical replication stream that turns pgoutput
// inserts on the outbox table into Events (the row-to-record mapping is
// package route's; the decoder hands it each outbox row).
//
// One goroutine, Stream.Run, owns the replication connection: it receives
// messages, sends standby status updates on its own timer (and when the
// server asks, and once more at shutdown), and hands decoded Messages to
// the relay in WAL order. Confirm only raises the position those updates
// carry; the relay calls it with the checkpoint tracker's safe position and
// nothing else.
//
// The decoder speaks pgoutput protocol version 1. It binds the route
// mapping to each Relation message's columns by name, so adding a column
// to the outbox table while the relay runs is harmless, and it skips (and
// counts) updates, deletes, truncates and logical decoding messages such
// as the relay's heartbeats.
package replication
