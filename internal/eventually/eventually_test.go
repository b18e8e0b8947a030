package eventually

import (
	"context"
	"testing"
	"time"
)

func TestTrueReturnsOnceCondHolds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	calls := 0
	if !True(ctx, time.Millisecond, func() bool { calls++; return calls == 3 }) {
		t.Fatal("True = false, want true once cond holds")
	}
	if calls != 3 {
		t.Fatalf("cond called %d times, want 3: True polls until cond holds, then stops", calls)
	}
}

func TestTrueChecksBeforeWaiting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if !True(ctx, time.Hour, func() bool { return true }) {
		t.Fatal("True = false for a cond that holds at once")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("True took %s for a cond that holds at once: it waited an interval first", took)
	}
}

func TestTrueGivesUpWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	calls := 0
	if True(ctx, time.Millisecond, func() bool { calls++; return false }) {
		t.Fatal("True = true for a cond that never holds")
	}
	if ctx.Err() == nil {
		t.Fatal("True returned before ctx ended")
	}
	if calls < 2 {
		t.Fatalf("cond called %d times in 50 ms at a 1 ms interval: True did not poll", calls)
	}
}
