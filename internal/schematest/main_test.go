package schematest_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
)

// pg is the Postgres every test of the package shares; each subtest gets its
// own database on it.
var pg *pgtest.Server

// serverSettings are what the matrix needs beyond pgtest's defaults:
// prepared transactions for the two-phase case, and room for one slot and
// walsender per parallel subtest (plus walsenders that linger a moment
// after their relay stopped).
var serverSettings = map[string]string{
	"max_prepared_transactions": "10",
	"max_replication_slots":     "64",
	"max_wal_senders":           "64",
}

// defaultParallel is how many matrix subtests run at once unless -parallel
// is given. They spend most of their time waiting on Postgres, the broker
// and status intervals, not on CPU, so more than GOMAXPROCS keeps the
// matrix fast on a 2-core machine.
const defaultParallel = "8"

func TestMain(m *testing.M) { os.Exit(kafkatest.Main(func() int { return runMain(m) })) }

func runMain(m *testing.M) int {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", defaultParallel)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	s, err := pgtest.Start(ctx, pgtest.Options{Settings: serverSettings})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest: start postgres:", err)
		return 1
	}
	defer s.Close()
	pg = s
	return m.Run()
}
