package apachekafka

import (
	"os"
	"testing"
)

// EnableEnv must be "1" for New to start a cluster; otherwise New skips
// the test. `make test-kafka` sets it; `make test` needs no Java.
const EnableEnv = "OUTBOX_RELAY_APACHE_KAFKA"

// VersionEnv, when set, is the Kafka version New runs (default
// DefaultVersion), so one `make test-kafka` can run per version.
const VersionEnv = "OUTBOX_RELAY_KAFKA_VERSION"

// KeepEnv, when "1", keeps the cluster directory of a failed test.
const KeepEnv = "OUTBOX_RELAY_KAFKA_KEEP"

// Enabled reports whether EnableEnv asks for Apache Kafka tests.
func Enabled() bool { return os.Getenv(EnableEnv) == "1" }

// New starts a cluster for a test and registers its Close with
// t.Cleanup; it skips the test unless Enabled. When the test fails, the
// nodes' log tails are logged (and, with KeepEnv=1, the directory is
// kept). opts.Version defaults to $OUTBOX_RELAY_KAFKA_VERSION, and
// opts.Logf to t.Logf. Start-up is bounded by t.Context(), by
// opts.StartTimeout and, on the first run, by the Maven fetch's limit.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if !Enabled() {
		t.Skipf("Apache Kafka tests are off; set %s=1 (make test-kafka) to run them", EnableEnv)
	}
	if opts.Version == "" {
		opts.Version = os.Getenv(VersionEnv)
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	c, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("start Apache Kafka: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Apache Kafka logs:\n%s", c.LogTail(80))
			c.opts.KeepDir = c.opts.KeepDir || os.Getenv(KeepEnv) == "1"
		}
		if err := c.Close(); err != nil {
			t.Errorf("close Apache Kafka: %v", err)
		}
	})
	return c
}
