// Package eventually is the one way a test waits for a result: it polls a
// condition until it holds or the test's context ends, instead of sleeping
// for a guessed time (too short on a loaded machine, too long everywhere
// else) or rolling yet another polling loop. It imports only the standard
// library, so every package's tests can use it, including the internal
// tests of packages the test harness imports (package sink's, for one),
// which cannot import internal/relaytest.
package eventually

import (
	"context"
	"time"
)

// True calls cond at once, then every interval after the last call
// returned, until cond returns true (True returns true) or ctx ends (True
// returns false, cond's last answer). cond is not called after ctx has
// ended. True never fails the test itself, so the caller can gather what
// it needs for a failure message first; cond runs on the caller's
// goroutine, so it may call t.Fatal for an invariant broken while waiting.
func True(ctx context.Context, every time.Duration, cond func() bool) bool {
	if cond() {
		return true
	}
	timer := time.NewTimer(every)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
		}
		if cond() {
			return true
		}
		timer.Reset(every)
	}
}
