package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
)

// TestPrefixCounterEndsOnlyOnTheBrokersExactCount pins the topics
// scenario's end: the relay's own count only says when to ask the broker,
// and the broker's count ends the run only when every expected topic is
// listed; a topic outside the expected set fails the run.
func TestPrefixCounterEndsOnlyOnTheBrokersExactCount(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := kafkatest.Start(kafkatest.Options{Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	produce := func(topic string, n int) {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addrs()...), kgo.AllowAutoTopicCreation())
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		for i := range n {
			if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "%d", i)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The relay claims all 10 acked whatever the broker holds.
	acked := "10"
	relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "# TYPE %s counter\n%s %s\n", relayAckedMetric, relayAckedMetric, acked)
	}))
	defer relay.Close()
	p := &relayProc{metrics: strings.TrimPrefix(relay.URL, "http://")}
	c, err := newPrefixCounter(b.Addrs(), topicsPrefix, 2, 10, false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// A partial listing whose sum reaches the backlog (here by itself:
	// one topic of the two holds 10) must not end the run.
	produce(topicsPrefix+"order-0", 10)
	produce("other-topic", 50) // outside the prefix: never counted
	if n, err := c.acked(ctx, p); err != nil || n >= 10 {
		t.Fatalf("one of two topics listed: acked = %d, %v; want below 10", n, err)
	}
	// Both listed: the exact sum, duplicates included (runRelay refuses
	// a count above the backlog).
	produce(topicsPrefix+"order-1", 1)
	if n, err := c.acked(ctx, p); err != nil || n != 11 {
		t.Fatalf("both topics hold 11: acked = %d, %v; want 11", n, err)
	}
	acked = "3" // below the backlog: the broker is not asked
	if n, err := c.acked(ctx, p); err != nil || n != 3 {
		t.Fatalf("relay at 3: acked = %d, %v; want the relay's 3", n, err)
	}
	acked = "10"
	produce(topicsPrefix+"order-2", 1)
	if _, err := c.acked(ctx, p); err == nil || !strings.Contains(err.Error(), "holds 3 outbox.event.* topics, want 2") {
		t.Fatalf("a third topic: err = %v; want one naming the extra topic", err)
	}
}

func TestRelayAckedWithoutTheMetric(t *testing.T) {
	relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "outbox_relay_events_acked_total_other 5")
	}))
	defer relay.Close()
	n, found, err := relayAcked(context.Background(), strings.TrimPrefix(relay.URL, "http://"))
	if err != nil || found || n != 0 {
		t.Fatalf("relayAcked = %d, %v, %v; want not found", n, found, err)
	}
}
