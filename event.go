package outboxrelay

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// LSN is a position in the Postgres write-ahead log. It stays typed from
// the wire to the status update; it is formatted only for logs and metrics.
type LSN = pglogrepl.LSN

// Header is one Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Event is one outbox row, routed and ready to produce. Its byte slices are
// owned by the Event: they never alias a receive buffer.
type Event struct {
	// ID is the outbox row's id as text: the idempotency key consumers
	// deduplicate on. Several events can share an LSN; IDs are unique.
	ID    string
	Topic string
	Key   []byte
	// Value is the payload as stored (jsonb/json/text as text, bytea raw)
	// or wrapped in the configured envelope; nil is a tombstone.
	Value   []byte
	Headers []Header
	// PartitionKey is hashed to choose the partition, so one aggregate's
	// events stay in order on one partition.
	PartitionKey []byte
	// LSN is the WAL position of the insert; CommitLSN that of its
	// transaction's commit record.
	LSN        LSN
	CommitLSN  LSN
	CommitTime time.Time
	// Timestamp is the record's timestamp when a column gives it; zero
	// means CommitTime.
	Timestamp time.Time
}
