package kafkafault_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/apachekafka"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
)

// pg is the Postgres every test shares; each test has its own database.
var pg *pgtest.Server

// Without OUTBOX_RELAY_APACHE_KAFKA=1 nothing starts: every test skips.
func TestMain(m *testing.M) {
	if !apachekafka.Enabled() {
		os.Exit(m.Run())
	}
	code := pgtest.Main(m, &pg)
	edge.close()
	os.Exit(code)
}

// The edge cluster's SASL user, listener names and ACL-denied principal.
const (
	saslListener = "SASL"
	tlsListener  = "TLS"
	relayUser    = "relay"
	relayPass    = "relay-secret"
)

// edge is the single node the non-destructive faults share (4, 5 and 6):
// auto-create off, a SASL/SCRAM-SHA-512 and a TLS listener, an
// authorizer. It starts with the first test that needs it, so
// `-run TestX` starts only what TestX uses, and stops after m.Run. Its
// tests create their topics up front and route to their own prefix.
var edge sharedCluster

type sharedCluster struct {
	once sync.Once
	c    *apachekafka.Cluster
	err  error
}

func (s *sharedCluster) get(t *testing.T) *apachekafka.Cluster {
	t.Helper()
	if !apachekafka.Enabled() {
		t.Skipf("Apache Kafka tests are off; set %s=1 (make test-kafka) to run them", apachekafka.EnableEnv)
	}
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		begin := time.Now()
		s.c, s.err = apachekafka.StartSingle(ctx, apachekafka.Options{
			Version: os.Getenv(apachekafka.VersionEnv),
			Config:  map[string]string{"auto.create.topics.enable": "false"},
			Listeners: []apachekafka.Listener{
				{Name: saslListener, Security: apachekafka.SASLPlaintext, Mechanisms: []string{apachekafka.ScramSHA512}},
				{Name: tlsListener, Security: apachekafka.SSL},
			},
			Users:      []apachekafka.User{{Name: relayUser, Password: relayPass, Mechanism: apachekafka.ScramSHA512}},
			Authorizer: true,
		})
		if s.err == nil {
			fmt.Fprintf(os.Stderr, "kafkafault: shared edge cluster (Kafka %s) ready in %s\n", s.c.Version(), time.Since(begin).Round(time.Millisecond))
		}
	})
	if s.err != nil {
		t.Fatalf("start the shared Apache Kafka node: %v", s.err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Apache Kafka logs (shared edge node):\n%s", s.c.LogTail(80))
		}
	})
	return s.c
}

func (s *sharedCluster) close() {
	if s.c != nil {
		if err := s.c.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "kafkafault: close the shared cluster:", err)
		}
	}
}
