package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/faulttest"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

var (
	consumerOnce sync.Once
	consumerBin  string
	consumerErr  error
)

// inboxConsumer builds examples/inbox-consumer once per package run.
func inboxConsumer(t *testing.T) string {
	t.Helper()
	consumerOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		consumerBin = filepath.Join(filepath.Dir(bin), "inbox-consumer")
		build := exec.Command("go", "build", "-o", consumerBin, "./examples/inbox-consumer")
		build.Dir = filepath.Join(filepath.Dir(file), "..", "..")
		if out, err := build.CombinedOutput(); err != nil {
			consumerErr = fmt.Errorf("build examples/inbox-consumer: %v\n%s", err, out)
		}
	})
	if consumerErr != nil {
		t.Fatal(consumerErr)
	}
	return consumerBin
}

// startConsumer runs examples/inbox-consumer on the consumer database.
func startConsumer(t *testing.T, env *relaytest.Env, pgURL, name string) *proc {
	t.Helper()
	p := &proc{t: t, exited: make(chan struct{}), logPath: filepath.Join(t.TempDir(), name+".log"), metrics: freeAddr(t)}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(inboxConsumer(t), "--pg-url", pgURL, "--kafka-brokers", strings.Join(env.Kafka.Addrs(), ","),
		"--group", "e2e", "--topic-regex", `^outbox\.event\.`, "--session-timeout", "6s", "--shutdown-timeout", "5s",
		"--metrics-addr", p.metrics)
	p.launch(t, "inbox-consumer", logf, func(log string) {
		lines := strings.Split(log, "\n")
		t.Logf("last lines of %s:\n%s", name, strings.Join(lines[max(0, len(lines)-15):], "\n"))
	})
	return p
}

// skipped sums a consumer's outbox_relay_inbox_skipped_duplicates_total
// over its topics (-1 when /metrics is unreachable).
func skipped(p *proc) float64 {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "outbox_relay_inbox_skipped_duplicates_total{") {
			f, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			sum += f
		}
	}
	return sum
}

// counts reads inbox_example_counts (empty until the consumer made it).
func counts(ctx context.Context, t *testing.T, conn *pgx.Conn) (map[string]int64, int64) {
	t.Helper()
	out := map[string]int64{}
	var total int64
	rows, err := conn.Query(ctx, "SELECT aggregate_id, n FROM inbox_example_counts")
	if err != nil {
		return out, 0
	}
	defer rows.Close()
	for rows.Next() {
		var a string
		var n int64
		if err := rows.Scan(&a, &n); err != nil {
			t.Fatal(err)
		}
		out[a], total = n, total+n
	}
	return out, total
}

// The whole loop under load and faults: an application writes, the relay
// streams, Kafka holds, and examples/inbox-consumer applies each event
// once though consumers are killed (kill -9, twice), the relay is killed
// (it re-sends its unconfirmed tail) and the group rebalances (a second
// consumer joins and later leaves): for every aggregate, n equals its
// number of outbox rows.
func TestInboxConsumerAppliesOnceThroughKills(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 3})
	dbURL, err := pg.CreateDatabase(ctx, "inbox_"+env.Slot)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	applied := func() int64 { _, n := counts(ctx, t, conn); return n }
	waitApplied := func(what string, n int64) {
		t.Helper()
		if !eventually.True(ctx, 50*time.Millisecond, func() bool { return applied() >= n }) {
			t.Fatalf("%s: %d events applied, never reached %d", what, applied(), n)
		}
	}

	relay := start(t, env, 200*time.Millisecond)
	relay.waitReadyz(ctx, "streaming", streaming)
	load := faulttest.StartLoad(env, 3*time.Millisecond)
	c1 := startConsumer(t, env, dbURL, "consumer-1")
	waitApplied("first consumer", 300)

	c1.kill() // kill -9 #1: applied records whose offsets were not yet committed come again
	c2 := startConsumer(t, env, dbURL, "consumer-2")
	waitApplied("after the first consumer kill", applied()+300)

	c3 := startConsumer(t, env, dbURL, "consumer-3") // joins: a rebalance
	waitApplied("after a consumer joined", applied()+300)

	relay.kill() // the relay re-sends its unconfirmed tail: the same ids again
	relay = start(t, env, 200*time.Millisecond)
	relay.waitReadyz(ctx, "streaming again", streaming)
	waitApplied("after the relay kill", applied()+300)

	// c2 took over c1's partitions after c1's kill -9: the records c1 had
	// applied but not yet committed the offsets of came again, and were
	// skipped, as were the relay's re-sent events.
	skippedByC2 := skipped(c2)
	c2.kill() // kill -9 #2
	waitApplied("after the second consumer kill", applied()+300)
	c3.stop() // leaves gracefully: a rebalance
	if code := c3.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("inbox-consumer exited %d on SIGTERM, want 0", code)
	}
	startConsumer(t, env, dbURL, "consumer-4")
	waitApplied("after a consumer left", applied()+300)

	written := load.Stop()
	faulttest.CatchUp(ctx, t, env, env.Slot, time.Now())
	want := map[string]int64{}
	rows, err := env.Pool.Query(ctx, "SELECT aggregate_id, count(*) FROM outbox GROUP BY 1")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for rows.Next() {
		var a string
		var n int64
		if err := rows.Scan(&a, &n); err != nil {
			t.Fatal(err)
		}
		want[a], total = n, total+n
	}
	if rows.Err() != nil || total != int64(len(written)) {
		t.Fatalf("%d outbox rows, %d written (%v)", total, len(written), rows.Err())
	}
	waitApplied("at the end", total)
	inKafka, _ := kafkatest.Count(ctx, env.Kafka.Addrs(), faulttest.Topics())
	got, n := counts(ctx, t, conn)
	t.Logf("%d events in %d aggregates; %d records in Kafka; %d applied; the consumer started after the first kill skipped %v duplicates",
		total, len(want), inKafka, n, skippedByC2)
	if skippedByC2 <= 0 {
		t.Errorf("the consumer that took over after a kill -9 skipped %v duplicates: the kill re-delivered nothing, so the test did not exercise the inbox", skippedByC2)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("n per aggregate:\n got %v\nwant %v", got, want)
	}
}
