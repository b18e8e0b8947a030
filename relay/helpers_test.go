package relay_test

import (
	"context"
	"testing"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
)

func relaytestLSN(v uint64) outboxrelay.LSN { return outboxrelay.LSN(v) }

func pgtestReplica(ctx context.Context, t *testing.T) *pgtest.Server {
	t.Helper()
	srv, err := pgtest.Start(ctx, pgtest.Options{WALLevel: "replica"})
	if err != nil {
		t.Fatalf("start wal_level=replica postgres: %v", err)
	}
	t.Cleanup(srv.Close)
	return srv
}
