package pgtest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// New starts a server for a test or benchmark and registers Close with
// t.Cleanup. It fails the test immediately when the server cannot start.
// When opts.Logf is nil, progress lines go to t.Logf. If the test failed,
// the tail of the server log is logged before the server is removed.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	s, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pgtest: last lines of the postgres log:\n%s", s.LogTail(50))
		}
		s.Close()
	})
	return s
}

// Main runs a test package against one shared server, for TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, &pg)) }
//
// It sets *srv before the tests run and removes the server after them.
func Main(m *testing.M, srv **Server) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	s, err := Start(ctx, Options{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest: start postgres:", err)
		return 1
	}
	defer s.Close()
	*srv = s
	return m.Run()
}
