package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// acks collects what a sink reports, by token.
type acks struct {
	mu   sync.Mutex
	errs map[uint64]error
	n    chan struct{}
}

func newAcks() *acks { return &acks{errs: map[uint64]error{}, n: make(chan struct{}, 1000)} }

func (a *acks) ack(token uint64, err error) {
	a.mu.Lock()
	a.errs[token] = err
	a.mu.Unlock()
	a.n <- struct{}{}
}

func (a *acks) wait(ctx context.Context, t *testing.T, n int) map[uint64]error {
	t.Helper()
	for range n {
		select {
		case <-a.n:
		case <-ctx.Done():
			t.Fatalf("got %d of %d acks", len(a.errs), n)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.errs
}

const limitedTopic = "limited"

// event builds a record of about 170 bytes on the wire, or big ones over
// the topic's 2000-byte max.message.bytes.
func event(i int, big bool) *outboxrelay.Event {
	value := fmt.Sprintf(`{"seq": %d, "note": "%s"}`, i, strings.Repeat("x", 100))
	if big {
		value = fmt.Sprintf(`{"seq": %d, "note": "%s"}`, i, strings.Repeat("x", 3000))
	}
	return &outboxrelay.Event{ID: fmt.Sprintf("e%02d", i), Topic: limitedTopic, Key: []byte("agg-1"),
		PartitionKey: []byte("agg-1"), Value: []byte(value), LSN: outboxrelay.LSN(100 + i), CommitLSN: 1000, CommitTime: time.Now()}
}

// TestRefusedBatchIsIsolated pins how a whole-batch refusal was blamed:
// sarama fails every record of a batch the broker refuses, and each error
// was taken as final for its own record, so the valid neighbours of one
// oversized record were reported undeliverable too (and a batch of small
// valid records, too large only together, all of them). Only the record
// Kafka refuses alone may be reported; the others, and the records queued
// behind the refused batch, must reach the partition, in produce order.
func TestRefusedBatchIsIsolated(t *testing.T) {
	for _, tc := range []struct {
		name string
		bad  int // the oversized record, -1 for none
	}{
		{"one oversized record", 11},
		{"small records too large together", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testRefusedBatch(t, tc.bad)
		})
	}
}

func testRefusedBatch(t *testing.T, bad int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	if err := cluster.CreateTopic(limitedTopic, 1, map[string]string{"max.message.bytes": "2000"}); err != nil {
		t.Fatal(err)
	}
	// Hold the first produce request until later records are queued behind it.
	arrived, release := make(chan struct{}), make(chan struct{})
	var held atomic.Bool
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if held.CompareAndSwap(false, true) {
			close(arrived)
			cluster.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})

	cfg := DefaultConfig()
	cfg.Brokers = cluster.ListenAddrs()
	cfg.Linger = 100 * time.Millisecond
	got := newAcks()
	s, err := New(cfg, got.ack)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	defer func() { stop(); <-done }()
	const n, later = 24, 5
	for i := range n {
		if err := s.Produce(ctx, event(i, i == bad), uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	<-arrived
	for i := n; i < n+later; i++ {
		if err := s.Produce(ctx, event(i, false), uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	close(release)

	errs := got.wait(ctx, t, n+later)
	var want []int
	for i := range n + later {
		err := errs[uint64(i)]
		switch {
		case i == bad && (IsRetriable(err) || !errors.Is(err, sarama.ErrMessageSizeTooLarge)):
			t.Errorf("the oversized record: %v, want a final MESSAGE_TOO_LARGE", err)
		case i != bad && err != nil:
			t.Errorf("record %d: %v, want it acked", i, err)
		case i != bad:
			want = append(want, i)
		}
	}
	recs := readTopic(ctx, t, cluster.ListenAddrs(), len(want))
	var seqs []int
	for _, r := range recs {
		var seq int
		if _, err := fmt.Sscanf(string(r.Value), `{"seq": %d,`, &seq); err != nil {
			t.Fatalf("record %q: %v", r.Value, err)
		}
		seqs = append(seqs, seq)
	}
	if fmt.Sprint(seqs) != fmt.Sprint(want) {
		t.Errorf("the partition holds %v, want %v", seqs, want)
	}
}

// readTopic reads the limited topic until it has want records (0: reads
// what is there within a second).
func readTopic(ctx context.Context, t *testing.T, addrs []string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(limitedTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	if want > 0 {
		pctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	for pctx.Err() == nil && (want == 0 || len(recs) < want) {
		recs = append(recs, cl.PollFetches(pctx).Records()...)
	}
	if len(recs) < want {
		t.Fatalf("read %d of %d records", len(recs), want)
	}
	return recs
}
