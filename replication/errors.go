package replication

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/pgerr"
)

func classifyStartError(slot string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case pgerr.ObjectInUse:
			return fmt.Errorf("%s: %w", pgErr.Message, outboxrelay.ErrSlotActive)
		case pgerr.UndefinedObject:
			return &outboxrelay.ConfigError{Problem: pgErr.Message, Fix: fmt.Sprintf("create it with: outbox-relay setup (or run %q)", "SELECT pg_create_logical_replication_slot('"+slot+"', 'pgoutput')")}
		}
	}
	return fmt.Errorf("start replication: %w", err)
}

// classifyStreamError makes a missing publication, which the walsender
// reports while decoding (it looks publications up as of each change), a
// ConfigError: reconnecting meets the same WAL and the same error forever.
func classifyStreamError(cfg Config, pgErr *pgconn.PgError) error {
	if pgErr.Code == pgerr.UndefinedObject && strings.Contains(pgErr.Message, "publication") {
		return &outboxrelay.ConfigError{
			Problem: fmt.Sprintf("replication: %s: the publication was dropped or renamed, or created after the WAL the slot is decoding", pgErr.Message),
			Fix: fmt.Sprintf("if it was renamed, rename it back to %s; if it was dropped and created again, move the slot past its creation (outbox-relay slot advance) and re-publish the rows inserted in between",
				QuoteIdent(cfg.Publication)),
		}
	}
	return fmt.Errorf("replication: %w", pgErr)
}
