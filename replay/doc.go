// Package replay re-publishes outbox rows still in the table: the recovery
// for events Kafka lost or never got (a gap report, a topic deleted by
// mistake, a consumer that must rebuild). It reads the table with a plain
// connection, with no slot, so a running relay is not affected, and sends
// each row through exactly the relay's mapping: the route.Binding the
// decoder builds from a pgoutput Relation message, built here from the
// catalog (the same columns in the same order, each value in its type's
// text output, which is what pgoutput sends), and the sink package's
// producer with its safe settings (idempotent, acks=all, one request in
// flight). Each record carries the header replayed=true.
//
// Order. Rows are read ORDER BY the created-at column, then ctid (physical
// order). Events of one aggregate go to one partition (the same partition
// key as the relay) through one idempotent producer, so Kafka keeps the
// order they were read in. That is commit order as closely as the table
// can say, and it differs where the table does not know: created_at
// defaults to now(), the start of the inserting transaction, so a
// transaction that started earlier but committed later sorts first; the
// rows of one transaction share a created_at and fall back to physical
// order, which is insertion order until an UPDATE or VACUUM FULL moves a
// row (and, on a partitioned table, only within a partition).
package replay
