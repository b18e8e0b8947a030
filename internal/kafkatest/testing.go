package kafkatest

import "testing"

// New starts a broker for a test or benchmark and registers Close with
// t.Cleanup. It fails the test immediately when the broker cannot start.
func New(t testing.TB, opts Options) *Broker {
	t.Helper()
	b, err := Start(opts)
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}
