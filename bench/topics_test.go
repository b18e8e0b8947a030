package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
)

// TestPrefixCounterEndsOnlyOnEveryTopic pins the topics scenario's end:
// the sum of the outbox.event.* topics' high watermarks ends a run only
// once one topic per aggregate is listed, and the last listing refuses
// a topic outside the expected set.
func TestPrefixCounterEndsOnlyOnEveryTopic(t *testing.T) {
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
	c, err := newPrefixCounter(b.Addrs(), topicsPrefix, 2, 10, false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// One topic of the two holds the whole count (duplicates, say): a
	// partial listing must not end the run.
	produce(topicsPrefix+"order-0", 10)
	produce("other-topic", 50) // outside the prefix: never counted
	if n, err := c.acked(ctx, nil); err != nil || n >= 10 {
		t.Fatalf("one of two topics listed: acked = %d, %v; want below 10", n, err)
	}
	if err := c.check(ctx); err == nil {
		t.Fatal("check passed with one of two topics")
	}
	// Both listed: the exact sum, duplicates included (runRelay refuses
	// a count above the backlog).
	produce(topicsPrefix+"order-1", 1)
	if n, err := c.acked(ctx, nil); err != nil || n != 11 {
		t.Fatalf("both topics hold 11: acked = %d, %v; want 11", n, err)
	}
	if err := c.check(ctx); err == nil || !strings.Contains(err.Error(), "hold 11 records, want 10") {
		t.Fatalf("check with 11 records: %v; want an error naming the count", err)
	}
	c.want = 11
	if err := c.check(ctx); err != nil {
		t.Fatalf("check with 2 topics holding 11: %v", err)
	}
	// A topic the count no longer lists (it knew its two) is found by the
	// last listing.
	produce(topicsPrefix+"order-2", 1)
	if err := c.check(ctx); err == nil || !strings.Contains(err.Error(), "holds 3 outbox.event.* topics, want 2") {
		t.Fatalf("a third topic: check = %v; want an error naming the extra topic", err)
	}
}
