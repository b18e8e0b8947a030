// Package checkpoint decides which WAL position may be confirmed to
// Postgres. It is pure: no I/O, no goroutines, no clock.
//
// The relay tracks, in WAL order, every event it is about to produce and
// every position that needs no ack (a commit's end LSN, a keepalive's WAL
// end). Acks arrive out of order across partitions; the Tracker keeps the
// contiguous prefix of finished entries, and Safe is the highest position in
// that prefix. Only Safe may reach the replication slot: confirming anything
// later would let Postgres discard events Kafka has not acknowledged.
//
// The Tracker also caps how many events, and how many bytes of them, may sit
// between the safe position and the newest tracked entry. Track blocks at the cap, which stops the WAL reader:
// that is the relay's backpressure, and what keeps memory bounded however
// large a transaction or a backlog is.
package checkpoint
