package relay_test

import (
	"os"
	"testing"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/sink"
)

// Compile-time checks that the real parts satisfy what the relay consumes.
var (
	_ relay.Source = (*replication.Stream)(nil)
	_ relay.Sink   = (*sink.Sink)(nil)
)

// pg is one throwaway Postgres shared by the package's tests; each test
// gets its own database (relaytest.NewEnv).
var pg *pgtest.Server

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	os.Exit(kafkatest.Main(func() int { return pgtest.Main(m, &pg) }))
}
