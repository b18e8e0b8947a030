package checkpoint

import (
	"context"
	"errors"
	"sync"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// Token identifies one tracked event; pass it to Done when Kafka acks it.
type Token uint64

type entry struct {
	lsn   outboxrelay.LSN // position reached once this entry is finished; 0 for events
	size  int64           // bytes an event holds until it is behind Safe
	event bool
	done  bool
}

// Tracker is the ordered, capped record of work between the confirmed
// position and the newest WAL message received. Track and Mark must be called
// from one goroutine (the one reading the stream, in WAL order); Done may be
// called from any goroutine. The zero value is not usable: call New.
type Tracker struct {
	capacity int
	maxBytes int64         // 0: no byte cap
	space    chan struct{} // a send wakes a Track blocked at a cap

	mu      sync.Mutex
	ring    []entry
	head    int    // index of the oldest entry
	headSeq uint64 // sequence number of ring[head]
	n       int    // entries in the ring
	events  int    // events in the ring, done or not: what the cap bounds
	bytes   int64  // their sizes, what maxBytes bounds
	peak    int
	peakB   int64
	safe    outboxrelay.LSN
}

// New returns a Tracker that lets at most capacity events, and at most
// maxBytes of them (0: no byte cap), be in flight. One event always fits
// when nothing is in flight, however large.
func New(capacity int, maxBytes int64) (*Tracker, error) {
	if capacity < 1 {
		return nil, errors.New("checkpoint: capacity must be at least 1")
	}
	if maxBytes < 0 {
		return nil, errors.New("checkpoint: max bytes must not be negative")
	}
	// Consecutive marks coalesce, so every mark in the ring follows an event:
	// twice the event cap always has room for marks, and Mark never blocks.
	return &Tracker{
		capacity: capacity,
		maxBytes: maxBytes,
		space:    make(chan struct{}, 1),
		ring:     make([]entry, 2*capacity),
	}, nil
}

// Track reserves a place for the next event in WAL order; size is the
// memory it holds until acked. It blocks while either cap would be
// exceeded, until an ack frees room or ctx ends.
func (t *Tracker) Track(ctx context.Context, size int) (Token, error) {
	for {
		t.mu.Lock()
		if t.events < t.capacity && (t.maxBytes == 0 || t.events == 0 || t.bytes+int64(size) <= t.maxBytes) {
			tok := t.push(entry{event: true, size: int64(size)})
			t.events++
			t.bytes += int64(size)
			t.peak = max(t.peak, t.events)
			t.peakB = max(t.peakB, t.bytes)
			t.mu.Unlock()
			return tok, nil
		}
		t.mu.Unlock()
		select {
		case <-t.space:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Untrack forgets the newest tracked event when it was never handed to the
// producer (Track succeeded, Produce did not), so nothing waits for its ack.
// Any other token is ignored: only the last entry can be taken back.
func (t *Tracker) Untrack(tok Token) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 || uint64(tok) != t.headSeq+uint64(t.n-1) {
		return
	}
	last := (t.head + t.n - 1) % len(t.ring)
	if e := t.ring[last]; !e.event || e.done {
		return
	}
	t.events--
	t.bytes -= t.ring[last].size
	t.ring[last] = entry{}
	t.n--
	select {
	case t.space <- struct{}{}:
	default:
	}
}

// Mark records a WAL position that needs no ack of its own (a commit's end
// LSN, a keepalive's WAL end). It becomes safe once everything tracked before
// it is done. It reports the new safe position and whether it moved.
func (t *Tracker) Mark(lsn outboxrelay.LSN) (outboxrelay.LSN, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		return t.advance(lsn)
	}
	if last := &t.ring[(t.head+t.n-1)%len(t.ring)]; !last.event {
		last.lsn = max(last.lsn, lsn)
		return t.safe, false
	}
	t.push(entry{lsn: lsn, done: true})
	return t.safe, false
}

// Done marks a tracked event acknowledged. It reports the new safe position
// and whether it moved. Calling Done twice for a token is a no-op.
func (t *Tracker) Done(tok Token) (outboxrelay.LSN, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	seq := uint64(tok)
	if seq < t.headSeq || seq >= t.headSeq+uint64(t.n) {
		return t.safe, false
	}
	t.ring[(t.head+int(seq-t.headSeq))%len(t.ring)].done = true
	if seq != t.headSeq {
		return t.safe, false
	}
	freed := false
	moved := false
	for t.n > 0 && t.ring[t.head].done {
		e := t.ring[t.head]
		if e.event {
			t.events--
			t.bytes -= e.size
			freed = true
		} else if _, ok := t.advance(e.lsn); ok {
			moved = true
		}
		t.ring[t.head] = entry{}
		t.head = (t.head + 1) % len(t.ring)
		t.headSeq++
		t.n--
	}
	if freed {
		select {
		case t.space <- struct{}{}:
		default:
		}
	}
	return t.safe, moved
}

// Safe is the highest position behind which every tracked entry is done.
func (t *Tracker) Safe() outboxrelay.LSN {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.safe
}

// InFlight is the number of events tracked and not yet behind Safe.
func (t *Tracker) InFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.events
}

// InFlightBytes is the size of the events InFlight counts.
func (t *Tracker) InFlightBytes() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.bytes
}

// PeakBytes is the highest InFlightBytes seen; it exceeds the byte cap only
// by an oversized event tracked alone.
func (t *Tracker) PeakBytes() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.peakB
}

// Peak is the highest InFlight seen; it never exceeds the capacity.
func (t *Tracker) Peak() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.peak
}

func (t *Tracker) push(e entry) Token {
	t.ring[(t.head+t.n)%len(t.ring)] = e
	tok := Token(t.headSeq + uint64(t.n))
	t.n++
	return tok
}

func (t *Tracker) advance(lsn outboxrelay.LSN) (outboxrelay.LSN, bool) {
	if lsn <= t.safe {
		return t.safe, false
	}
	t.safe = lsn
	return t.safe, true
}
