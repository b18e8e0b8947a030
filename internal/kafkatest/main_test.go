package kafkatest_test

import (
	"os"
	"testing"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
)

func TestMain(m *testing.M) { os.Exit(kafkatest.Main(m.Run)) }
