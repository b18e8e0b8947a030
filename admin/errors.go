package admin

import (
	"fmt"

	"github.com/outbox-relay/outbox-relay/replication"
)

// NoIndexError refuses to prune a table whose age column has no index:
// every batch would scan the whole table.
type NoIndexError struct {
	Table       replication.TableName
	Column      string
	Partitioned bool
}

func (e *NoIndexError) Error() string {
	return fmt.Sprintf("no index on %s (%q): every batch would scan the whole table; create one first:\n  %s\n(or pass --allow-seqscan to prune anyway)",
		e.Table, e.Column, PruneIndexSQL(e.Table, e.Column, e.Partitioned))
}
