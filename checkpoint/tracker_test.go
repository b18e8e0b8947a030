package checkpoint

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

func newTracker(t *testing.T, capacity int) *Tracker {
	t.Helper()
	tr, err := New(capacity, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func track(t *testing.T, tr *Tracker) Token {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	tok, err := tr.Track(ctx, 1)
	if err != nil {
		t.Fatalf("Track: %v", err)
	}
	return tok
}

func TestSafeWaitsForContiguousPrefix(t *testing.T) {
	tr := newTracker(t, 10)
	a := track(t, tr)
	b := track(t, tr)
	tr.Mark(100) // commit of the transaction holding a and b
	c := track(t, tr)
	tr.Mark(200)

	if got, moved := tr.Done(b); moved || got != 0 {
		t.Fatalf("after acking b only: safe=%v moved=%v, want 0/false", got, moved)
	}
	if got, moved := tr.Done(c); moved || got != 0 {
		t.Fatalf("after acking c: safe=%v moved=%v, want 0/false (a is still in flight)", got, moved)
	}
	if got, moved := tr.Done(a); !moved || got != 200 {
		t.Fatalf("after acking a: safe=%v moved=%v, want 200/true", got, moved)
	}
	if tr.InFlight() != 0 {
		t.Fatalf("InFlight=%d, want 0", tr.InFlight())
	}
}

func TestKeepaliveIsABarrier(t *testing.T) {
	// Regression guard for the go-pq-cdc#107 / Conduit#313 bug: a keepalive's
	// WAL end confirmed while an earlier event was unacked lost that event.
	tr := newTracker(t, 10)
	a := track(t, tr)
	tr.Mark(100)
	if got, _ := tr.Mark(5000); got != 0 {
		t.Fatalf("keepalive moved safe to %v while an event is in flight", got)
	}
	if got, _ := tr.Done(a); got != 5000 {
		t.Fatalf("safe=%v after ack, want the keepalive's 5000", got)
	}
}

func TestMarkOnEmptyTrackerAdvancesAtOnce(t *testing.T) {
	tr := newTracker(t, 1)
	if got, moved := tr.Mark(42); !moved || got != 42 {
		t.Fatalf("Mark on idle tracker: %v/%v, want 42/true", got, moved)
	}
	if got, moved := tr.Mark(41); moved || got != 42 {
		t.Fatalf("Mark backwards: %v/%v, want 42/false", got, moved)
	}
}

func TestTrackBlocksAtCapacity(t *testing.T) {
	tr := newTracker(t, 2)
	a := track(t, tr)
	track(t, tr)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := tr.Track(ctx, 1); err == nil {
		t.Fatal("Track succeeded beyond the cap")
	}

	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := tr.Track(ctx, 1)
		got <- err
	}()
	tr.Done(a)
	if err := <-got; err != nil {
		t.Fatalf("Track after an ack freed a place: %v", err)
	}
	if tr.Peak() != 2 {
		t.Fatalf("Peak=%d, want 2", tr.Peak())
	}
}

func TestDoneTwiceIsHarmless(t *testing.T) {
	tr := newTracker(t, 4)
	a := track(t, tr)
	tr.Mark(10)
	tr.Done(a)
	b := track(t, tr)
	tr.Mark(20)
	tr.Done(a) // stale token: must not finish b
	if got := tr.Safe(); got != 10 {
		t.Fatalf("safe=%v, want 10", got)
	}
	tr.Done(b)
	if got := tr.Safe(); got != 20 {
		t.Fatalf("safe=%v, want 20", got)
	}
}

// TestRandomAckOrder checks the invariant against a simple model: after any
// sequence of acks, safe equals the position of the last mark before the
// first unacked event.
func TestRandomAckOrder(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, seed))
		capacity := 1 + rng.IntN(8)
		tr := newTracker(t, capacity)

		type item struct {
			event bool
			tok   Token
			lsn   outboxrelay.LSN
			acked bool
		}
		var log []*item
		var pending []*item
		lsn := outboxrelay.LSN(0)
		for step := 0; step < 300; step++ {
			switch r := rng.IntN(10); {
			case r < 4 && tr.InFlight() < capacity:
				it := &item{event: true, tok: track(t, tr)}
				log = append(log, it)
				pending = append(pending, it)
			case r < 7:
				lsn += outboxrelay.LSN(1 + rng.IntN(100))
				tr.Mark(lsn)
				log = append(log, &item{lsn: lsn})
			case len(pending) > 0:
				i := rng.IntN(len(pending))
				pending[i].acked = true
				tr.Done(pending[i].tok)
				pending = append(pending[:i], pending[i+1:]...)
			}
			want := outboxrelay.LSN(0)
			for _, it := range log {
				if it.event && !it.acked {
					break
				}
				if !it.event {
					want = it.lsn
				}
			}
			if got := tr.Safe(); got != want {
				t.Fatalf("seed %d step %d: safe=%v, model says %v", seed, step, got, want)
			}
			if tr.InFlight() > capacity {
				t.Fatalf("seed %d: InFlight %d over cap %d", seed, tr.InFlight(), capacity)
			}
		}
	}
}

func TestTrackBlocksAtByteCap(t *testing.T) {
	tr, err := New(100, 1000)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	a, err := tr.Track(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Track(ctx, 300); err != nil {
		t.Fatalf("900 of 1000 bytes: %v", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if _, err := tr.Track(short, 200); err == nil {
		t.Fatal("Track let 1100 bytes be in flight under a 1000-byte cap")
	}
	tr.Done(a)
	if _, err := tr.Track(ctx, 200); err != nil {
		t.Fatalf("Track after an ack freed 600 bytes: %v", err)
	}
	if got := tr.InFlightBytes(); got != 500 {
		t.Fatalf("InFlightBytes = %d, want 500", got)
	}
	if got := tr.PeakBytes(); got != 900 {
		t.Fatalf("PeakBytes = %d, want 900", got)
	}
}

func TestOversizedEventPassesWhenIdle(t *testing.T) {
	// One event larger than the byte cap must not wedge the relay forever.
	tr, err := New(10, 100)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	big, err := tr.Track(ctx, 5000)
	if err != nil {
		t.Fatalf("an oversized event on an idle tracker: %v", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if _, err := tr.Track(short, 1); err == nil {
		t.Fatal("Track admitted more while the oversized event holds the byte cap")
	}
	tr.Done(big)
	if _, err := tr.Track(ctx, 1); err != nil {
		t.Fatal(err)
	}
}

func TestUntrackTakesBackOnlyTheNewest(t *testing.T) {
	// Regression: an event tracked but never produced (shutdown between
	// Track and Produce) kept InFlight above 0, so a graceful stop waited
	// out the whole shutdown timeout for an ack that could not come.
	tr := newTracker(t, 4)
	a := track(t, tr)
	tr.Mark(10)
	b := track(t, tr)
	tr.Untrack(a) // not the newest: ignored
	if tr.InFlight() != 2 {
		t.Fatalf("InFlight=%d after untracking an older token, want 2", tr.InFlight())
	}
	tr.Untrack(b)
	if tr.InFlight() != 1 || tr.InFlightBytes() != 1 {
		t.Fatalf("InFlight=%d bytes=%d after untracking the newest, want 1/1", tr.InFlight(), tr.InFlightBytes())
	}
	if got, _ := tr.Done(a); got != 10 {
		t.Fatalf("safe=%v after acking the remaining event, want 10", got)
	}
	if tr.InFlight() != 0 {
		t.Fatalf("InFlight=%d, want 0", tr.InFlight())
	}
}
