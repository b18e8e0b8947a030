// Package checkpoint decides which WAL position may be confirmed to
// Postgres, and keeps the relay's durable record of what it confirmed.
// "Checkpoint" means this and nothing else.
//
// The in-memory part (tracker.go, and the gap arithmetic DetectGap) is
// pure: no I/O, no goroutines, no clock. The relay tracks, in WAL order,
// every event it is about to produce and every position that needs no ack
// (a commit's end LSN, a keepalive's WAL end). Acks arrive out of order
// across partitions; the Tracker keeps the contiguous prefix of finished
// entries, and Safe is the highest position in that prefix. Only Safe may
// reach the replication slot: confirming anything later would let Postgres
// discard events Kafka has not acknowledged.
//
// The Tracker also caps how many events, and how many bytes of them, may
// sit between the safe position and the newest tracked entry. Track blocks
// at the cap, which stops the WAL reader: that is the relay's backpressure,
// and what keeps memory bounded however large a transaction or a backlog
// is.
//
// The durable part (record.go, keeper.go) is the table
// outbox_relay.checkpoint: one row per slot, raised before every position
// is confirmed to that slot (the Keeper's Record hook runs on the
// replication stream's goroutine before each status update). A slot found
// past its record was moved by something else, and events were skipped:
// that is a gap (DetectGap), and the relay refuses to go on until an
// operator re-publishes and accepts it.
package checkpoint
