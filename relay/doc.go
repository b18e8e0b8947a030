// Package relay wires a Source (the replication stream) to a Sink (the Kafka
// producer) through the checkpoint tracker, and keeps the pipeline alive.
//
// Each attempt is a session: a fresh stream from the slot's confirmed
// position, a fresh producer and a fresh tracker. Every event is tracked
// before it is produced; its ack marks it done; only the tracker's safe
// position is confirmed to the source. A retriable failure of either side
// (a lost connection, a produce that exhausted its retries) ends the session
// without confirming anything past the failure; the next session resends
// from the slot. Errors that retrying cannot fix (configuration, an event
// Kafka refuses for good or the decoder cannot map) stop the relay with a
// message naming the fix; with OnUndeliverable "dead-letter" such an event
// is instead copied to the dead-letter topic, and counts as delivered only
// once that copy is acked.
// While another process holds the slot, the relay waits as a hot standby;
// a session builds its producer only once its stream is live, so a standby
// polling for the slot never connects to Kafka.
//
// Shutdown (ctx cancelled) stops reading, waits up to ShutdownTimeout for
// in-flight acks, confirms the safe position, and lets the source send its
// final status update before the producer closes.
package relay
