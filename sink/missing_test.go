package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/eapache/go-resiliency/breaker"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestTopicWait pins the arithmetic of the wait for a missing topic: a
// record to a topic Kafka does not know was undeliverable as soon as
// sarama's metadata retries ran out, though the topic may still have been
// being created. It is retriable until the topic has been missing for the
// wait, counted from its first failure; an ack forgets it.
func TestTopicWait(t *testing.T) {
	const wait = time.Minute
	unknown := fmt.Errorf("topic: %w", sarama.ErrUnknownTopicOrPartition)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := NewMissingTopics()
	check := func(step string, got error, retriable bool, missing, left time.Duration, parts ...string) {
		t.Helper()
		if IsRetriable(got) != retriable || !errors.Is(got, sarama.ErrUnknownTopicOrPartition) {
			t.Errorf("%s: %v: retriable %v, want %v, and still an unknown topic", step, got, IsRetriable(got), retriable)
		}
		var tw *TopicWaitError
		if retriable && (!errors.As(got, &tw) || tw.Missing != missing || tw.Left != left) {
			t.Errorf("%s: %#v, want a *TopicWaitError missing %s, %s left", step, got, missing, left)
		}
		for _, p := range parts {
			if !strings.Contains(got.Error(), p) {
				t.Errorf("%s: %q does not contain %q", step, got, p)
			}
		}
	}
	check("first failure", waitForTopic(m, wait, "outbox.a", unknown, t0), true, 0, wait,
		`topic "outbox.a" does not exist`, "missing for 0s", "waiting 1m0s more",
		"create it, or enable auto.create.topics.enable on the brokers")
	check("20 s on", waitForTopic(m, wait, "outbox.a", unknown, t0.Add(20*time.Second)), true, 20*time.Second, 40*time.Second,
		"missing for 20s", "waiting 40s more")
	check("another topic", waitForTopic(m, wait, "outbox.b", unknown, t0.Add(20*time.Second)), true, 0, wait)
	// After three failed lookups sarama's circuit breaker fails the topic's
	// records; topicFailures reports them as the topic's last error.
	breakerErr := topicFailures{"outbox.a": unknown}.failed("outbox.a", breaker.ErrBreakerOpen)
	check("breaker open", waitForTopic(m, wait, "outbox.a", breakerErr, t0.Add(30*time.Second)), true, 30*time.Second, 30*time.Second)
	check("wait over", waitForTopic(m, wait, "outbox.a", unknown, t0.Add(wait)), false, 0, 0, "missing for 1m0s; the topic wait is 1m0s")
	check("still over", waitForTopic(m, wait, "outbox.a", unknown, t0.Add(2*wait)), false, 0, 0)

	m.found("outbox.a")
	check("acked, then missing again", waitForTopic(m, wait, "outbox.a", unknown, t0.Add(3*wait)), true, 0, wait)
	check("the other topic keeps its clock", waitForTopic(m, wait, "outbox.b", unknown, t0.Add(wait)), true, 40*time.Second, 20*time.Second)

	if got := waitForTopic(m, 0, "outbox.c", unknown, t0); got != unknown || IsRetriable(got) {
		t.Errorf("wait 0: %v, want the error as it was, final", got)
	}
	if _, ok := m.since["outbox.c"]; ok {
		t.Error("wait 0 remembered the topic")
	}
	other := fmt.Errorf("x: %w", sarama.ErrNotEnoughReplicas)
	if got := waitForTopic(m, wait, "outbox.c", other, t0); got != other {
		t.Errorf("a retriable error became %v", got)
	}
	if got := waitForTopic(m, wait, "outbox.c", sarama.ErrTopicAuthorizationFailed, t0); got != sarama.ErrTopicAuthorizationFailed {
		t.Errorf("an authorization failure became %v", got)
	}
}

// TestMissingTopicsAreBounded: topic names come from row values, so the
// memory of missing topics must not grow without bound. Past the bound a
// topic past its wait is forgotten first, else the newest: never the
// oldest while it still waits (TestTopicWaitEndsWithManyMissingTopics).
func TestMissingTopicsAreBounded(t *testing.T) {
	m := NewMissingTopics()
	t0 := time.Now()
	const wait = time.Minute
	for i := range maxMissingTopics + 10 {
		m.missingFor(fmt.Sprintf("t%d", i), t0.Add(time.Duration(i)*time.Millisecond), wait)
	}
	if n := len(m.since); n != maxMissingTopics || m.n.Load() != int64(n) {
		t.Fatalf("%d topics remembered (count %d), want the bound %d", n, m.n.Load(), maxMissingTopics)
	}
	for i := range 10 {
		if _, ok := m.since[fmt.Sprintf("t%d", i)]; !ok {
			t.Errorf("t%d, among the oldest and still waiting, was forgotten", i)
		}
	}
	// Past the wait, the topics whose wait is over make room first.
	late := t0.Add(time.Hour)
	m.missingFor("fresh", late, wait)
	if _, ok := m.since["fresh"]; !ok || len(m.since) != maxMissingTopics {
		t.Errorf("a new topic past the others' waits: remembered %v, %d topics", ok, len(m.since))
	}
	if got := m.missingFor("t5", late, wait); got != late.Sub(t0.Add(5*time.Millisecond)) {
		t.Errorf("an old topic lost its clock: missing for %s", got)
	}
	m.found("fresh")
	for i := range maxMissingTopics + 10 {
		m.found(fmt.Sprintf("t%d", i))
	}
	if len(m.since) != 0 || m.n.Load() != 0 {
		t.Errorf("%d topics (count %d) left after every one was acked", len(m.since), m.n.Load())
	}
}

// TestMissingTopicsConcurrent: sinks of overlapping sessions share one
// MissingTopics (run with -race).
func TestMissingTopicsConcurrent(t *testing.T) {
	m := NewMissingTopics()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				topic := fmt.Sprintf("t%d", (g*7+i)%50)
				m.missingFor(topic, time.Now(), time.Minute)
				if i%3 == 0 {
					m.found(topic)
				}
			}
		})
	}
	wg.Wait()
	if n := len(m.since); m.n.Load() != int64(n) || n > 50 {
		t.Errorf("%d topics, count %d", n, m.n.Load())
	}
}

// TestMissingTopicWaitSpansSinks runs the wait through sinks on a broker
// with auto-create off, one after the other as the relay's sessions are:
// the first sink's record to a missing topic fails retriably, the second's
// (sharing the memory, past the wait) finally, and once the topic exists
// a third delivers and forgets it.
func TestMissingTopicWaitSpansSinks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	cfg := DefaultConfig()
	cfg.Brokers = cluster.ListenAddrs()
	// Shorter than sarama's metadata retries (~5 s), so the second sink's
	// failure comes past it.
	cfg.TopicWait = 2 * time.Second
	missing := NewMissingTopics()

	err = produceOne(ctx, t, cfg, missing, "late")
	var tw *TopicWaitError
	if !IsRetriable(err) || !errors.As(err, &tw) || tw.Topic != "late" || tw.Missing != 0 {
		t.Fatalf("first session: %v, want a retriable wait for the topic", err)
	}
	err = produceOne(ctx, t, cfg, missing, "late")
	if IsRetriable(err) || !errors.Is(err, sarama.ErrUnknownTopicOrPartition) || !strings.Contains(err.Error(), "the topic wait is 2s") {
		t.Fatalf("second session, past the wait: %v, want a final unknown topic", err)
	}
	if err := cluster.CreateTopic("late", 1, nil); err != nil {
		t.Fatal(err)
	}
	if err := produceOne(ctx, t, cfg, missing, "late"); err != nil {
		t.Fatalf("once the topic exists: %v", err)
	}
	if n := missing.n.Load(); n != 0 {
		t.Errorf("%d topics still missing after the ack", n)
	}
}

// produceOne runs a sink sharing missing until it reports one record to
// topic, and returns that report.
func produceOne(ctx context.Context, t *testing.T, cfg Config, missing *MissingTopics, topic string) error {
	t.Helper()
	reports := make(chan error, 1)
	s, err := New(cfg, func(_ uint64, err error) { reports <- err }, WithMissingTopics(missing))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	defer func() { stop(); <-done }()
	ev := small(0, []byte("agg-1"))
	ev.Topic = topic
	if err := s.Produce(ctx, ev, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-reports:
		return err
	case <-ctx.Done():
		t.Fatalf("no report for the record to %q", topic)
		return nil
	}
}

// Pins the bound on MissingTopics forgetting the very topic that holds
// the relay: a session ends at its first missing topic (in WAL order, the
// oldest), and the sink notes every other missing topic of the in-flight
// window as its records fail. With more than maxMissingTopics of them
// (routing by a column with many values, auto-create off), each session
// evicts the oldest entry, which is that first topic, so its next failure
// starts its wait over: the wait never ends, the relay reconnects and
// resends forever, and neither halts nor dead-letters.
func TestTopicWaitEndsWithManyMissingTopics(t *testing.T) {
	const wait = time.Minute
	unknown := fmt.Errorf("topic: %w", sarama.ErrUnknownTopicOrPartition)
	m := NewMissingTopics()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for session := range 30 {
		now := t0.Add(time.Duration(session) * 5 * time.Second)
		// The window fails in WAL order: the blocking topic first.
		first := waitForTopic(m, wait, "outbox.event.t0", unknown, now)
		if now.Sub(t0) >= wait {
			if IsRetriable(first) {
				var tw *TopicWaitError
				errors.As(first, &tw)
				t.Fatalf("session %d, %s after the topic first went missing: still waiting (missing for %s by the sink's count): "+
					"the wait restarts every session and never ends", session, now.Sub(t0), tw.Missing)
			}
			return
		}
		for i := 1; i <= maxMissingTopics+200; i++ {
			waitForTopic(m, wait, fmt.Sprintf("outbox.event.t%d", i), unknown, now.Add(time.Duration(i)*time.Microsecond))
		}
	}
}
