package debeziumtest_test

import (
	"os"
	"testing"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
)

// pg is the Postgres the package's tests share; each gets its own database.
var pg *pgtest.Server

func TestMain(m *testing.M) {
	os.Exit(kafkatest.Main(func() int { return pgtest.Main(m, &pg) }))
}
