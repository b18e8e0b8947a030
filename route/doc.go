// Package route maps a decoded outbox row to a Kafka record: which columns
// are the outbox's fields, the topic template, the message key, the column
// whose value picks the partition, the record's headers and timestamp,
// placed columns (Field), tombstones for NULL payloads, and the envelope
// (none, CloudEvents binary mode, or a versioned JSON document). Presets
// (Preset) are named starting points for Config, such as Debezium's
// Outbox Event Router defaults.
//
// It is pure: no I/O, no goroutines, no clock. A Mapper is built once from
// a Config (New validates it); Bind resolves the configured columns against
// one relation's column list, by name, because users add columns to the
// outbox while the relay runs; Binding.Event turns one row into an Event.
// Everything a row can get wrong (a NULL id or payload, a topic Kafka would
// refuse) is an *UnmappableError carrying the row's position, so the relay
// can halt at it or dead-letter it; a relation missing a configured column
// is an *outboxrelay.ConfigError.
//
// Event copies every byte it keeps: the Values it reads alias the
// replication connection's receive buffer, which is reused for the next
// message. The copies share one allocation sized up front, because the
// relay's per-event allocations are its main GC cost.
//
// A Mapper keeps a small cache of rendered topic names, so a Mapper and
// its Bindings are used by one goroutine at a time (the decoder's).
package route
