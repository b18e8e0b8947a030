package faulttest_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/pgtest"
)

// pg is the Postgres shared by the tests that do not restart or reconfigure
// it; those start their own.
var pg *pgtest.Server

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	srv, err := pgtest.Start(ctx, pgtest.Options{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start postgres:", err)
		os.Exit(1)
	}
	pg = srv
	code := m.Run()
	srv.Close()
	os.Exit(code)
}
