package faulttest_test

import (
	"os"
	"testing"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
)

// pg is the Postgres shared by the tests that do not restart or reconfigure
// it; those start their own.
var pg *pgtest.Server

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	os.Exit(kafkatest.Main(func() int { return pgtest.Main(m, &pg) }))
}
