package relay_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/internal/wire"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/sink"
)

// A relay in a child process (this test binary re-executed), so a test can
// SIGKILL it: a crash with no final status update and no drained acks,
// which a cancelled context in-process cannot imitate.
const childEnv = "OUTBOX_RELAY_TEST_CHILD"

func runChild() int {
	rc := replication.DefaultConfig()
	rc.ConnString = os.Getenv("CHILD_PG_URL")
	rc.Slot = os.Getenv("CHILD_SLOT")
	rc.StatusInterval = 100 * time.Millisecond
	sc := sink.DefaultConfig()
	sc.Brokers = strings.Split(os.Getenv("CHILD_BROKERS"), ",")
	lc := relay.DefaultConfig()
	lc.BackoffMin, lc.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
	logger := zerolog.New(os.Stderr).With().Str("child", "relay").Logger()
	r, err := wire.Relay(wire.Config{Replication: rc, Sink: sc, Relay: lc}, logger, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := r.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

type child struct{ cmd *exec.Cmd }

func startChild(t *testing.T, env *relaytest.Env) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "CHILD_PG_URL="+env.URL, "CHILD_SLOT="+env.Slot,
		"CHILD_BROKERS="+strings.Join(env.Kafka.Addrs(), ","))
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child relay: %v", err)
	}
	c := &child{cmd: cmd}
	t.Cleanup(func() { c.kill() })
	return c
}

// kill is a crash: SIGKILL, then reap.
func (c *child) kill() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	_, _ = c.cmd.Process.Wait()
	c.cmd.ProcessState = &os.ProcessState{}
}
