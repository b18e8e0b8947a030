// Package inbox is the consumer half of the outbox pattern: a Kafka
// consumer-group runner that applies each event's effect to a Postgres
// database once, however often Kafka delivers the event.
//
// For every record a Consumer opens a pgx transaction, inserts the event id
// into the inbox table (a primary key per consumer group: a conflict means
// the event was already applied, so the record is skipped), calls the
// application's Handler in that same transaction, commits, and only then
// marks the record's offset. A crash anywhere before the commit rolls the
// effect back and Kafka re-delivers the record; a crash after it
// re-delivers a record whose id is already in the inbox, and the
// re-delivery is skipped. The guarantee holds only for effects the
// handler writes through the transaction it is given: an HTTP call or an
// email sent from a handler may happen more than once.
//
// Records of one partition are handled one at a time, in offset order;
// partitions are handled concurrently, at most Config.MaxConcurrency
// records at once. A handler error marked with Retryable (and a
// serialization failure or deadlock) is retried with exponential backoff
// up to Config.MaxAttempts; after that, or at once for any other error,
// the record is copied to Config.DeadLetterTopic with headers naming the
// error and the original topic, partition and offset, and the partition
// moves on. Failures of the inbox's own database work (Postgres down) are
// retried until they succeed or the partition is revoked: a record is
// never dead-lettered because the database was unreachable.
//
// When a partition is revoked (a rebalance) or Run's context ends, no new
// record is taken; the record in flight finishes (its transaction commits
// and its offset is marked) or, past Config.ShutdownTimeout, its context
// is cancelled and its transaction rolls back; then the marked offsets are
// committed and the partition is released.
//
// Ids older than Config.Retention are pruned in batches while Run runs;
// a record re-delivered after its id was pruned would be applied again,
// so Retention must exceed how far back a consumer group can be rewound.
//
// See docs/inbox.md for the guarantee in full and the table's DDL.
package inbox
