package faulttest_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/internal/wire"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/sink"
)

// A relay in a child process (this test binary run again), so a test can
// kill -9 it: a crash with no final status update and no drained acks,
// which cancelling an in-process relay cannot imitate. It runs with the
// defaults a user gets from `outbox-relay run` (the same Config defaults
// cmd starts from), wired by the same constructor; only the database, the
// slot and the brokers are set.
const childEnv = "OUTBOX_RELAY_FAULTTEST_CHILD"

func runChild() int {
	rc := replication.DefaultConfig()
	rc.ConnString = os.Getenv("CHILD_PG_URL")
	rc.Slot = os.Getenv("CHILD_SLOT")
	sc := sink.DefaultConfig()
	sc.Brokers = strings.Split(os.Getenv("CHILD_BROKERS"), ",")
	logger := zerolog.New(os.Stderr).With().Timestamp().Logger()
	r, err := wire.Relay(wire.Config{Replication: rc, Sink: sc, Relay: relay.DefaultConfig()}, logger, nil)
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

// child is one relay process.
type child struct {
	t      *testing.T
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

var childSeq int

// startChild runs a relay for env in a child process, logging to a file
// whose notable lines the test prints if it fails.
func startChild(t *testing.T, env *relaytest.Env) *child {
	t.Helper()
	childSeq++
	c := &child{t: t, exited: make(chan struct{}), log: filepath.Join(t.TempDir(), fmt.Sprintf("relay-%d.log", childSeq))}
	logf, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), childEnv+"=1", "CHILD_PG_URL="+env.URL, "CHILD_SLOT="+env.Slot,
		"CHILD_BROKERS="+strings.Join(env.Kafka.Addrs(), ","))
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start child relay: %v", err)
	}
	go func() {
		_ = c.cmd.Wait()
		logf.Close()
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.kill()
		if t.Failed() {
			raw, _ := os.ReadFile(c.log)
			var notable []string
			for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
				if !strings.Contains(l, `"level":"info"`) && !strings.Contains(l, `"level":"debug"`) {
					notable = append(notable, l)
				}
			}
			t.Logf("warnings and errors of %s:\n%s", filepath.Base(c.log), strings.Join(notable[:min(len(notable), 20)], "\n"))
		}
	})
	return c
}

// kill is a crash: SIGKILL, then wait until the process is gone.
func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

// waitStreaming polls until a walsender streams env's slot to the child.
func (c *child) waitStreaming(ctx context.Context, env *relaytest.Env) {
	c.t.Helper()
	if !eventually.True(ctx, 20*time.Millisecond, func() bool {
		select {
		case <-c.exited:
			raw, _ := os.ReadFile(c.log)
			c.t.Fatalf("child relay exited before streaming:\n%s", raw)
		default:
		}
		var active bool
		err := env.Pool.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", env.Slot).Scan(&active)
		return err == nil && active
	}) {
		c.t.Fatalf("child relay never streamed slot %s: %v", env.Slot, ctx.Err())
	}
}
