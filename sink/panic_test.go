package sink

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// TestRetryBackoffEveryCount pins the panic of the producer's backoff: it
// shifted the base by retries-1, and sarama calls it with retries == 0
// when a new record finds no leader ("negative shift amount" ended the
// process).
func TestRetryBackoffEveryCount(t *testing.T) {
	base, ceiling := 100*time.Millisecond, 5*time.Second
	prev := time.Duration(0)
	for retries := -1; retries <= 1100; retries++ {
		got := retryBackoff(retries, base, ceiling)
		if got < base || got > ceiling {
			t.Fatalf("retryBackoff(%d) = %s, want within [%s, %s]", retries, got, base, ceiling)
		}
		if got < prev {
			t.Fatalf("retryBackoff(%d) = %s, shorter than the %s of the retry before", retries, got, prev)
		}
		prev = got
	}
	for retries, want := range map[int]time.Duration{0: base, 1: base, 2: 2 * base, 3: 4 * base, 6: 3200 * time.Millisecond, 7: ceiling} {
		if got := retryBackoff(retries, base, ceiling); got != want {
			t.Errorf("retryBackoff(%d) = %s, want %s", retries, got, want)
		}
	}
	// A base near the Duration limit must not overflow into a negative wait.
	if got := retryBackoff(1000, time.Duration(1<<62), time.Duration(1<<62)); got != time.Duration(1<<62) {
		t.Errorf("retryBackoff with a huge base = %s, want the ceiling", got)
	}

	// What sarama calls, for the counts it passes.
	cfg := DefaultConfig()
	cfg.Brokers = []string{"127.0.0.1:1"}
	s, err := New(cfg, func(uint64, error) {})
	if err != nil {
		t.Fatal(err)
	}
	g := newGate(net.Dialer{})
	for retries := range 20 {
		if got := s.retryWait(g, retries); got <= 0 || got > cfg.RetryBackoffMax {
			t.Errorf("retryWait(%d) = %s", retries, got)
		}
	}
}

// TestCallbackPanicEndsRun pins that a panic in the sink's own code that
// sarama runs on its goroutines (here the retry backoff, with its metrics
// missing) ends the sink's Run with a *PanicError instead of the process.
func TestCallbackPanicEndsRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := runningSink(t, WithMetrics(&Metrics{})) // nil instruments: Inc panics
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	if got := s.retryWait(newGate(net.Dialer{}), 3); got != 0 {
		t.Errorf("a panicking backoff returned %s, want 0", got)
	}
	assertPanicError(ctx, t, done)
}

// TestSaramaPanicEndsRun: a panic sarama recovers on its own goroutines
// reaches every running sink through Panics (what cmd installs as
// sarama.PanicHandler) and ends its Run with a *PanicError.
func TestSaramaPanicEndsRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	panics := NewPanics()
	s := runningSink(t, WithPanics(panics))
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("run: %v", err)
	}
	panics.Handle("boom")
	assertPanicError(ctx, t, done)
	panics.Handle("after the end") // a stopped sink is no longer reached
}

func runningSink(t *testing.T, opts ...Option) *Sink {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	cfg := DefaultConfig()
	cfg.Brokers = cluster.ListenAddrs()
	s, err := New(cfg, func(uint64, error) {}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func assertPanicError(ctx context.Context, t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		var pe *PanicError
		if !errors.As(err, &pe) {
			t.Fatalf("Run returned %v, want a *PanicError", err)
		}
		t.Logf("Run returned: %v", err)
	case <-ctx.Done():
		t.Fatal("Run did not end after the panic")
	}
}
