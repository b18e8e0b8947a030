// Package replication owns the replication connection and nothing else:
// the logical replication stream, pgoutput decoding, and standby status
// updates. The row-to-record mapping is package route's; the decoder
// hands it each outbox row.
//
// One goroutine, Stream.Run, owns the connection. It first asks its
// Preparer (admin.Sessions in the product) for a Plan: the checks and
// setup, the slot's position, the outbox's relation ids, and the Record
// hook. It then receives messages, hands decoded Messages to the relay in
// WAL order, and sends status updates on its own timer (and when the
// server asks, while the relay pushes back, and once more at shutdown).
// Before each update it calls the plan's Record hook with the highest
// position Confirm was given, and sends what the hook returns: the durable
// record (package checkpoint) covers a position before Postgres hears of
// it. Confirm only raises that one high-water mark; the relay calls it
// with the checkpoint tracker's safe position and nothing else.
//
// The decoder speaks pgoutput protocol version 1. It binds the route
// mapping to each Relation message's columns by name, so adding a column
// to the outbox table while the relay runs is harmless, and it skips (and
// counts) updates, deletes, truncates and logical decoding messages such
// as the relay's heartbeats.
package replication
