package inbox_test

import (
	"os"
	"testing"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
)

// pg is one throwaway Postgres for the package; each test gets a database.
var pg *pgtest.Server

func TestMain(m *testing.M) {
	os.Exit(kafkatest.Main(func() int { return pgtest.Main(m, &pg) }))
}
