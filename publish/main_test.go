package publish_test

import (
	"os"
	"testing"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
)

var pg *pgtest.Server

func TestMain(m *testing.M) {
	os.Exit(kafkatest.Main(func() int { return pgtest.Main(m, &pg) }))
}
