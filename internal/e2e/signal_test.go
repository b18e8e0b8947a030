package e2e_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestSIGTERMDrainsAndExitsZero: the deploy path. SIGTERM waits for the
// acks, sends the final status update and exits 0, so the slot sits past
// every delivered event.
func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{})
	p := start(t, env, time.Second)
	p.waitReadyz(ctx, "streaming", streaming)
	_, end := env.Insert(ctx, []relaytest.Event{
		{AggregateType: "order", AggregateID: "1", EventType: "Placed", Seq: 1},
		{AggregateType: "order", AggregateID: "1", EventType: "Paid", Seq: 2},
	})
	if _, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), relaytest.Topics("order"), 2); err != nil {
		t.Fatal(err)
	}

	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-ctx.Done():
		t.Fatal("the relay did not exit after SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	logs, _ := os.ReadFile(p.logPath)
	if !strings.Contains(string(logs), "final status update sent") {
		t.Fatalf("no final status update in the log:\n%s", logs)
	}
	if got := env.Confirmed(ctx, env.Slot); got < end {
		t.Fatalf("slot confirmed %s after a graceful stop, behind the delivered events (%s)", got, end)
	}
}

// TestSecondSignalExitsAtOnce: while a graceful stop waits for acks that
// do not come (Kafka refusing), a second signal ends the process at once.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	kafkatest.RequireKfake(t, "a produce fault")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{})
	p := start(t, env, time.Second) // --shutdown-timeout 5s
	p.waitReadyz(ctx, "streaming", streaming)
	env.Kafka.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	env.Insert(ctx, []relaytest.Event{{AggregateType: "order", AggregateID: "1", EventType: "Placed", Seq: 1}})
	p.waitReadyz(ctx, "retrying the refused produce", func(int, string) bool {
		return metric(p, "outbox_relay_sink_retries_total") > 0
	})

	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	// Not waiting for a result: the two signals must arrive apart, or the
	// runtime may deliver them as one.
	time.Sleep(300 * time.Millisecond)
	select {
	case <-p.exited:
		t.Fatal("the relay exited on the first signal although an event was unacked: it did not wait for the ack")
	default:
	}
	second := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(3 * time.Second): // the bound on "at once", not a poll
		t.Fatal("the relay ignored the second signal")
	}
	if p.cmd.ProcessState.Exited() {
		t.Fatalf("the relay exited normally (code %d) rather than by the second signal", p.cmd.ProcessState.ExitCode())
	}
	t.Logf("second signal ended the relay after %s", time.Since(second).Round(time.Millisecond))
}

// metric reads one unlabelled sample from the relay's /metrics (0 if absent).
func metric(p *proc, name string) float64 {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
