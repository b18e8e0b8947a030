package pgtest

import "testing"

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
