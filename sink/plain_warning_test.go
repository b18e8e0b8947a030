package sink

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"
)

// lockedBuffer collects log lines written from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestPlainWithoutTLSWarns pins a silent risk: SASL PLAIN sends the
// password as is, and without TLS it crossed the network in clear text
// with nothing said.
func TestPlainWithoutTLSWarns(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256"} {
		t.Run(mech, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser(mech, "relay", "s3cret"))
			if err != nil {
				t.Fatal(err)
			}
			defer cluster.Close()
			cfg := DefaultConfig()
			cfg.Brokers = cluster.ListenAddrs()
			cfg.SASL = SASL{Mechanism: mech, User: "relay", Password: "s3cret"}
			var logs lockedBuffer
			s, err := New(cfg, func(uint64, error) {}, WithLogger(zerolog.New(&logs)))
			if err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- s.Run(runCtx) }()
			select {
			case <-s.Ready():
			case err := <-done:
				t.Fatalf("run: %v", err)
			case <-ctx.Done():
				t.Fatal("not connected")
			}
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			warned := strings.Contains(logs.String(), `"level":"warn"`) && strings.Contains(logs.String(), "clear text")
			if warned != (mech == "PLAIN") {
				t.Errorf("%s without TLS: warned %v; logs: %s", mech, warned, logs.String())
			}
			if strings.Contains(logs.String(), "s3cret") {
				t.Errorf("the password is in the logs: %s", logs.String())
			}
		})
	}
}
