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
// It exists for refused batches (see Sink: isolation). sarama reports a
// refused batch's errors on an unbuffered channel from the goroutine that
// owns the broker connection, and unmutes the partition (sends its later
// records) only after the last of them is received: closing the gate while
// handling the first error keeps every later record of that partition from
// reaching Kafka ahead of the refused batch's resent records. Connections
// are not cut: with one request in flight per connection (sarama takes
// the slot before writing), a write that fails leaves no response behind,
// while the response of a request written just before the gate closed
// still arrives, so that request's records are acked, not resent.
type gate struct {
	dialer net.Dialer
	closed atomic.Bool
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

// gatedConn refuses writes once its gate is closed.
type gatedConn struct {
	net.Conn
	g *gate
}

func (c *gatedConn) Write(b []byte) (int, error) {
	if c.g.isClosed() {
		return 0, errGateClosed
	}
	return c.Conn.Write(b)
}
