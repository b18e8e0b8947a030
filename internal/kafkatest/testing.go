package kafkatest

import "testing"

// New gives a test or benchmark a broker and registers its Close with
// t.Cleanup. It fails the test immediately when the broker cannot start.
//
// The broker is kfake unless OUTBOX_RELAY_APACHE_KAFKA=1 (`make
// test-kafka`): then it is the test package's shared single-node Apache
// Kafka cluster for opts.Partitions (its num.partitions), started on first
// use and closed by Main after the package's tests. One test holds it at
// a time: New waits while another test (other than the caller's parent)
// holds it, then deletes every topic the previous test left and creates
// opts.Topics. A failed test logs the tail of the broker's log.
func New(t testing.TB, opts Options) *Broker {
	t.Helper()
	opts.setDefaults()
	if Apache() {
		b, err := newApache(t, opts)
		if err != nil {
			t.Fatalf("kafkatest: %v", err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("kafkatest: the Apache Kafka log during the test (last 60 lines):\n%s", b.logSince(60))
			}
			b.Close()
		})
		return b
	}
	b, err := Start(opts)
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}
