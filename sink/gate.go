package sink

import (
	"net"
	"sync/atomic"
)

// gate is a producer's dialer (sarama's Net.Proxy.Dialer). Once closed,
// every write on its connections and every new dial fails, so the
// producer sends nothing more; requests already written still get their
// responses.
//
// It exists for refused batches (see Sink: isolation) and for the halt at
// an undeliverable record. sarama reports a batch's errors on an
// unbuffered channel, one by one, and unmutes the partition (may send its
// later records) right after the last of them is received: before the
// drain goroutine that received it has looked at it. For a batch of two or
// more records the gate closes while sarama waits to hand over the second
// error, but the error of a batch of one record (an oversized record
// alone in its batch, every batch of an isolation's last round) raced the
// partition's next request, which then reached Kafka ahead of the refused
// record. So every write first waits until the drain is back at its
// select (see reportsRead): by then it has handled every report sarama
// handed it before the write began, and closed the gate if one of them
// called for it. Connections are not cut: with one request in flight per
// connection (sarama takes the slot before writing), a write that fails
// leaves no response behind, while the response of a request written just
// before the gate closed still arrives, so that request's records are
// acked, not resent.
type gate struct {
	dialer net.Dialer
	closed atomic.Bool
	// drain is the goroutine reading the producer's reports, while it runs.
	drain atomic.Pointer[drainer]
}

// drainer is a drain goroutine as its gate's writes see it.
type drainer struct {
	// atSelect is unbuffered: a send on it completes only when the drain
	// receives it at its select, having handled every report before.
	atSelect chan struct{}
	gone     chan struct{} // closed when the drain returns
}

// attach makes the calling goroutine the drain of g's producer until it
// calls the returned detach. It must receive from atSelect in the select
// where it receives the producer's reports.
func (g *gate) attach() (atSelect <-chan struct{}, detach func()) {
	d := &drainer{atSelect: make(chan struct{}), gone: make(chan struct{})}
	g.drain.Store(d)
	return d.atSelect, func() { close(d.gone) }
}

// reportsRead returns once the drain has handled every report the
// producer handed it before the call (at once when no drain runs: then
// none was handed over, or all were handled). sarama calls it, through
// Write, from its own goroutines; the drain never writes.
func (g *gate) reportsRead() {
	d := g.drain.Load()
	if d == nil || g.isClosed() {
		return
	}
	select {
	case d.atSelect <- struct{}{}:
	case <-d.gone:
	}
}

func newGate(d net.Dialer) *gate { return &gate{dialer: d} }

// Dial connects unless the gate is closed. sarama calls it from its own
// goroutines.
func (g *gate) Dial(network, addr string) (net.Conn, error) {
	if g.isClosed() {
		return nil, errGateClosed
	}
	c, err := g.dialer.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	return &gatedConn{Conn: c, g: g}, nil
}

// close fails every later write and dial. It is idempotent.
func (g *gate) close() { g.closed.Store(true) }

func (g *gate) isClosed() bool { return g.closed.Load() }

// gatedConn refuses writes once its gate is closed, and lets none through
// before the drain has read what sarama reported (see gate).
type gatedConn struct {
	net.Conn
	g *gate
}

func (c *gatedConn) Write(b []byte) (int, error) {
	c.g.reportsRead()
	if c.g.isClosed() {
		return 0, errGateClosed
	}
	return c.Conn.Write(b)
}
