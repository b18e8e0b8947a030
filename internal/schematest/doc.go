// Package schematest runs the schema matrix: one stream of outbox events
// through the relay for each table shape, name and column type users
// actually deploy (partitioned outboxes, mixed-case and spaced names, a
// mixed-case publication, every supported payload and id type, TOASTed
// payloads, savepoints, two-phase commit), each from the relay's own setup
// and from a publication a DBA made. It has only tests; they share one
// Postgres server configured for them (max_prepared_transactions > 0).
package schematest
