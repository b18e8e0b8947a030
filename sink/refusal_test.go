package sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/IBM/sarama/mocks"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
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

// heldLimitedCluster starts a kfake broker with limitedTopic (partitions,
// max.message.bytes 2000) that holds the first produce request until
// release is closed, so later records queue behind it; arrived closes when
// that request is in.
func heldLimitedCluster(t *testing.T, partitions int32) (cluster *kfake.Cluster, arrived, release chan struct{}) {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	if err := cluster.CreateTopic(limitedTopic, partitions, map[string]string{"max.message.bytes": "2000"}); err != nil {
		t.Fatal(err)
	}
	arrived, release = make(chan struct{}), make(chan struct{})
	var held atomic.Bool
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if held.CompareAndSwap(false, true) {
			close(arrived)
			cluster.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	return cluster, arrived, release
}

func testRefusedBatch(t *testing.T, bad int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cluster, arrived, release := heldLimitedCluster(t, 1)

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

// fates records every report of each token, to check each comes once.
type fates struct {
	mu    sync.Mutex
	errs  map[uint64][]error
	at    map[uint64]time.Time
	total atomic.Int64
}

func newFates() *fates { return &fates{errs: map[uint64][]error{}, at: map[uint64]time.Time{}} }

func (f *fates) ack(token uint64, err error) {
	f.mu.Lock()
	f.errs[token] = append(f.errs[token], err)
	f.at[token] = time.Now()
	f.mu.Unlock()
	f.total.Add(1)
}

// wait polls until n reports are in, or fails the test at ctx's end.
func (f *fates) wait(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	if !eventually.True(ctx, 10*time.Millisecond, func() bool { return f.total.Load() >= int64(n) }) {
		t.Fatalf("got %d of %d reports", f.total.Load(), n)
	}
}

// one returns token's only report, failing the test if it had another
// number of them.
func (f *fates) one(t *testing.T, token uint64) (error, bool) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.errs[token]; len(e) != 1 {
		t.Errorf("record %d reported %d times: %v", token, len(e), e)
		return nil, false
	}
	return f.errs[token][0], true
}

// keysFor returns one partition key landing on each of n partitions.
func keysFor(n int32) [][]byte {
	keys, found := make([][]byte, n), int32(0)
	for i := 0; found < n; i++ {
		k := []byte(fmt.Sprintf("agg-%d", i))
		if p := PartitionFor(k, n); keys[p] == nil {
			keys[p], found = k, found+1
		}
	}
	return keys
}

// small is an event of about 60 bytes on the wire with key: dozens fit a
// 2000-byte batch, thousands do not.
func small(i int, key []byte) *outboxrelay.Event {
	ev := event(i, false)
	ev.Key, ev.PartitionKey, ev.Value = key, key, []byte(fmt.Sprintf(`{"seq": %d, "note": ""}`, i))
	return ev
}

// seqs maps each partition to the seq of its records, in offset order.
func seqs(t *testing.T, recs []*kgo.Record) map[int32][]int {
	t.Helper()
	out := map[int32][]int{}
	for _, r := range recs {
		var seq int
		if _, err := fmt.Sscanf(string(r.Value), `{"seq": %d,`, &seq); err != nil {
			t.Fatalf("record %q: %v", r.Value, err)
		}
		out[r.Partition] = append(out[r.Partition], seq)
	}
	return out
}

func counterValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// startSink runs a sink on cfg until the test ends; done delivers what
// Run returns.
func startSink(ctx context.Context, t *testing.T, cfg Config, ack AckFunc, opts ...Option) (s *Sink, done <-chan error) {
	t.Helper()
	s, err := New(cfg, ack, opts...)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	result := make(chan error, 1)
	go func() { result <- s.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-s.stopped })
	return s, result
}

// TestOnlyBatchRefusalsIsolate pins isolation started by errors that are
// not a refusal of a batch: a record to a topic that does not exist
// (auto-create off) fails alone, from a metadata lookup, yet was taken as
// a refused batch, so every topic waited while a producer resent the held
// records one per request and looked the topic up again (one record to a
// missing topic stalled the existing one 5 s). Such a record is reported
// at once, and more than three of them are all reported as unknown topic:
// after three failed lookups sarama fails the topic's records with a
// retriable "circuit breaker is open", which restarted the session.
func TestOnlyBatchRefusalsIsolate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	if err := cluster.CreateTopic("good", 1, nil); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Brokers = cluster.ListenAddrs()
	// The topic is never created: this pins how its final failure is
	// reported, which the default TopicWait would postpone (and a retriable
	// wait ends the session). TestTopicWait covers the wait.
	cfg.TopicWait = 0
	got, m := newFates(), NewMetrics(nil)
	s, _ := startSink(ctx, t, cfg, got.ack, WithMetrics(m))
	key := []byte("agg-1")
	// Four records to the missing topic, then a record to the existing
	// one every 20 ms until every missing one is reported (each lookup
	// takes sarama's metadata retries, 10 x 500 ms).
	const ghosts = 4
	produced := map[uint64]time.Time{}
	for i := range ghosts {
		ev := small(i, key)
		ev.Topic = "missing"
		if err := s.Produce(ctx, ev, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	n := ghosts
	for ; ; n++ {
		got.mu.Lock()
		reported := 0
		for i := range ghosts {
			reported += len(got.errs[uint64(i)])
		}
		got.mu.Unlock()
		if reported >= ghosts && n > ghosts+50 {
			break
		}
		ev := small(n, key)
		ev.Topic = "good"
		produced[uint64(n)] = time.Now()
		if err := s.Produce(ctx, ev, uint64(n)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(20 * time.Millisecond): // the load's pace, not waiting for a result
		}
	}
	got.wait(ctx, t, n)
	for i := range ghosts {
		if err, ok := got.one(t, uint64(i)); ok && (IsRetriable(err) || !errors.Is(err, sarama.ErrUnknownTopicOrPartition)) {
			t.Errorf("record %d to the missing topic: %v, want a final unknown topic", i, err)
		}
	}
	var worst time.Duration
	for i := ghosts; i < n; i++ {
		if err, ok := got.one(t, uint64(i)); ok && err != nil {
			t.Errorf("record %d to the existing topic: %v", i, err)
		}
		got.mu.Lock()
		worst = max(worst, got.at[uint64(i)].Sub(produced[uint64(i)]))
		got.mu.Unlock()
	}
	if iso := counterValue(m.isolations); iso != 0 || worst > 2*time.Second {
		t.Errorf("%v isolations, and a record to the existing topic waited %s for its ack: want none, and no stall", iso, worst)
	}
	t.Logf("%d records to the existing topic, worst produce-to-ack %s", n-ghosts, worst.Round(time.Millisecond))
}

// TestBatchesTooLargeTogetherAreSplit pins the cost of a topic whose
// max.message.bytes is below the producer's batch size: every refused
// batch made the sink resend every held record, of every partition, one
// per request (5,000 small records took 5,002 requests), and the next
// producer built the same batches, so every burst was refused again and
// the relay ran at one record per request for good. A refused batch is now
// split in halves until its records get through (one record per request
// only for a batch holding a record Kafka refuses alone), and the record
// cap that got them through is kept: later bursts are not refused.
func TestBatchesTooLargeTogetherAreSplit(t *testing.T) {
	t.Run("bursts", func(t *testing.T) {
		const bursts, per = 10, 100
		requests, isolations := splitRun(t, 1, 50*time.Millisecond, bursts, per, -1)
		if isolations > 2 || requests > bursts*per/4 {
			t.Errorf("%d bursts of %d records: %v isolations, %d produce requests; want the refusal learned once, not one record per request",
				bursts, per, isolations, requests)
		}
	})
	for _, bad := range []int{-1, 50} {
		t.Run(fmt.Sprintf("a window of small records on three partitions, oversized %d", bad), func(t *testing.T) {
			const n = 3000
			requests, _ := splitRun(t, 3, 0, 1, n, bad)
			if requests > n/5 {
				t.Errorf("%d records took %d produce requests; want batches, not one record per request", n, requests)
			}
		})
	}
}

// splitRun produces bursts of per small records (bad: the oversized one)
// over partitions of a topic whose max.message.bytes is 2000, waiting for
// each burst's reports. It checks every record's fate and each partition's
// order, and returns the produce requests and isolations it took.
func splitRun(t *testing.T, partitions int32, linger time.Duration, bursts, per, bad int) (requests int64, isolations float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	if err := cluster.CreateTopic(limitedTopic, partitions, map[string]string{"max.message.bytes": "2000"}); err != nil {
		t.Fatal(err)
	}
	var nreq atomic.Int64
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		nreq.Add(1)
		return nil, nil, false
	})
	cfg := DefaultConfig()
	cfg.Brokers, cfg.Linger = cluster.ListenAddrs(), linger
	got, m := newFates(), NewMetrics(nil)
	s, _ := startSink(ctx, t, cfg, got.ack, WithMetrics(m))
	keys := keysFor(partitions)
	start := time.Now()
	for i := range bursts * per {
		ev := small(i, keys[i%int(partitions)])
		if i == bad {
			ev = event(i, true)
			ev.Key, ev.PartitionKey = keys[i%int(partitions)], keys[i%int(partitions)]
		}
		if err := s.Produce(ctx, ev, uint64(i)); err != nil {
			t.Fatal(err)
		}
		if (i+1)%per == 0 {
			got.wait(ctx, t, i+1)
		}
	}
	took := time.Since(start)
	want := map[int32][]int{}
	for i := range bursts * per {
		err, ok := got.one(t, uint64(i))
		switch {
		case !ok:
		case i == bad && (IsRetriable(err) || !errors.Is(err, sarama.ErrMessageSizeTooLarge)):
			t.Errorf("the oversized record: %v, want a final MESSAGE_TOO_LARGE", err)
		case i != bad && err != nil:
			t.Errorf("record %d: %v, want it acked", i, err)
		case i != bad:
			p := PartitionFor(keys[i%int(partitions)], partitions)
			want[p] = append(want[p], i)
		}
	}
	acked := 0
	for _, w := range want {
		acked += len(w)
	}
	if in := seqs(t, readTopic(ctx, t, cluster.ListenAddrs(), acked)); fmt.Sprint(in) != fmt.Sprint(want) {
		t.Errorf("the partitions hold %v, want %v", in, want)
	}
	requests, isolations = nreq.Load(), counterValue(m.isolations)
	t.Logf("%d records: %s, %d produce requests, %v isolations", bursts*per, took.Round(time.Millisecond), requests, isolations)
	return requests, isolations
}

// TestCorruptBatchIsIsolated pins a batch refused with CORRUPT_MESSAGE
// (what Kafka answered before KIP-467 for a null key on a compacted
// topic): sarama retries it, then fails every record of the batch with an
// error the sink took as retriable, so the session restarted and resent
// the same batch forever without naming the record. Once the retries are
// spent it is a refusal like the others: only the record Kafka refuses
// alone is reported, as undeliverable.
func TestCorruptBatchIsIsolated(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	if err := cluster.CreateTopic(limitedTopic, 1, nil); err != nil {
		t.Fatal(err)
	}
	// Refuse every partition batch holding the poisoned record.
	cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		refuse := false
		for _, tp := range pr.Topics {
			for _, p := range tp.Partitions {
				refuse = refuse || bytes.Contains(p.Records, []byte("POISON"))
			}
		}
		if !refuse {
			return nil, nil, false
		}
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, tp := range pr.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic = tp.Topic
			for _, p := range tp.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = p.Partition
				rp.ErrorCode = kerr.CorruptMessage.Code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
	cfg := DefaultConfig()
	cfg.Brokers, cfg.Linger = cluster.ListenAddrs(), 100*time.Millisecond
	cfg.RetryMax, cfg.RetryBackoff, cfg.RetryBackoffMax = 3, 10*time.Millisecond, 20*time.Millisecond
	got := newFates()
	s, _ := startSink(ctx, t, cfg, got.ack)
	const n, poison = 10, 4
	for i := range n {
		ev := event(i, false)
		if i == poison {
			ev.Value = []byte(fmt.Sprintf(`{"seq": %d, "note": "POISON"}`, i))
		}
		if err := s.Produce(ctx, ev, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	got.wait(ctx, t, n)
	var want []int
	for i := range n {
		err, ok := got.one(t, uint64(i))
		switch {
		case !ok:
		case i == poison && (IsRetriable(err) || !errors.Is(err, sarama.ErrInvalidMessage)):
			t.Errorf("the poisoned record: %v, want a final CORRUPT_MESSAGE", err)
		case i != poison && err != nil:
			t.Errorf("record %d: %v, want it acked", i, err)
		case i != poison:
			want = append(want, i)
		}
	}
	if in := seqs(t, readTopic(ctx, t, cluster.ListenAddrs(), len(want))); fmt.Sprint(in[0]) != fmt.Sprint(want) {
		t.Errorf("the partition holds %v, want %v", in[0], want)
	}
}

// logHook runs do, once, when a log line holds match.
type logHook struct {
	match string
	once  sync.Once
	do    func()
}

func (h *logHook) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(h.match)) {
		h.once.Do(h.do)
	}
	return len(p), nil
}

// TestProduceReturnsOnceRunHasReturned pins a Produce that never
// returned: when Kafka went away during an isolation, Run returned (it
// could not connect the next producer) while Produce waited for a
// producer to come back, on its ctx and on a shutdown that never came.
func TestProduceReturnsOnceRunHasReturned(t *testing.T) {
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
	cfg := DefaultConfig()
	cfg.Brokers, cfg.Linger, cfg.Timeout = cluster.ListenAddrs(), 100*time.Millisecond, 2*time.Second
	cfg.RetryMax, cfg.RetryBackoff, cfg.RetryBackoffMax = 2, 10*time.Millisecond, 20*time.Millisecond
	// Kafka goes away as the sink starts isolating a refused batch.
	hook := &logHook{match: "kafka refused a batch", do: cluster.Close}
	got := newFates()
	s, done := startSink(ctx, t, cfg, got.ack, WithLogger(zerolog.New(hook)))
	const n = 20
	for i := range n {
		if err := s.Produce(ctx, event(i, i == 11), uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		t.Logf("Run returned %v", err)
	case <-ctx.Done():
		t.Fatal("Run did not return once Kafka was gone")
	}
	got.wait(ctx, t, n)
	for i := range n {
		got.one(t, uint64(i))
	}
	for i := range 10 {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		err := s.Produce(pctx, event(n+i, false), uint64(n+i))
		pcancel()
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Produce after Run returned: %v, want ErrClosed", err)
		}
	}
}

// TestRefusalsOnTwoPartitionsAtOnce: refusals of two partitions in one
// response, two refused records in one partition's batch. Only those
// records are undeliverable; every other is acked once, and each
// partition holds them in produce order.
func TestRefusalsOnTwoPartitionsAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cluster, arrived, release := heldLimitedCluster(t, 2)
	cfg := DefaultConfig()
	cfg.Brokers, cfg.Linger = cluster.ListenAddrs(), 100*time.Millisecond
	got := newFates()
	s, _ := startSink(ctx, t, cfg, got.ack)
	keys := keysFor(2)
	ev := func(i int, big bool) *outboxrelay.Event {
		e := event(i, big)
		e.Key, e.PartitionKey = keys[i%2], keys[i%2]
		return e
	}
	bad := map[int]bool{5: true, 6: true, 9: true, 22: true}
	const n, later = 24, 10
	for i := range n {
		if err := s.Produce(ctx, ev(i, bad[i]), uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	<-arrived
	for i := n; i < n+later; i++ {
		if err := s.Produce(ctx, ev(i, false), uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	got.wait(ctx, t, n+later)
	want := map[int32][]int{}
	for i := range n + later {
		err, ok := got.one(t, uint64(i))
		switch {
		case !ok:
		case bad[i] && (IsRetriable(err) || !errors.Is(err, sarama.ErrMessageSizeTooLarge)):
			t.Errorf("oversized record %d: %v, want a final MESSAGE_TOO_LARGE", i, err)
		case !bad[i] && err != nil:
			t.Errorf("record %d: %v, want it acked", i, err)
		case !bad[i]:
			p := PartitionFor(keys[i%2], 2)
			want[p] = append(want[p], i)
		}
	}
	if in := seqs(t, readTopic(ctx, t, cluster.ListenAddrs(), n+later-len(bad))); fmt.Sprint(in) != fmt.Sprint(want) {
		t.Errorf("the partitions hold %v, want %v", in, want)
	}
}

// TestShutdownDuringIsolation: ctx ends while a producer resending refused
// records has a request in flight. Run returns, every record is reported
// once, none reported acked without being in Kafka, and Produce returns
// ErrClosed from then on.
func TestShutdownDuringIsolation(t *testing.T) {
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
	m := NewMetrics(nil)
	first, release := make(chan struct{}), make(chan struct{})
	isolating, releaseIso := make(chan struct{}), make(chan struct{})
	var nreq atomic.Int32
	var heldIso atomic.Bool
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		switch {
		case nreq.Add(1) == 1:
			close(first)
			cluster.SleepControl(func() { <-release })
		case counterValue(m.isolations) >= 1 && heldIso.CompareAndSwap(false, true):
			close(isolating)
			cluster.SleepControl(func() { <-releaseIso })
		}
		return nil, nil, false
	})
	cfg := DefaultConfig()
	cfg.Brokers, cfg.Linger = cluster.ListenAddrs(), 100*time.Millisecond
	got := newFates()
	s, err := New(cfg, got.ack, WithMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	const n = 20
	for i := range n {
		if err := s.Produce(ctx, event(i, i == 11), uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	<-first
	close(release)
	select {
	case <-isolating:
	case <-ctx.Done():
		t.Fatal("no request while isolating")
	}
	stop()
	if !eventually.True(ctx, 10*time.Millisecond, s.isClosing) {
		t.Fatal("the sink did not start closing")
	}
	close(releaseIso)
	select {
	case err := <-done:
		t.Logf("Run returned %v", err)
	case <-ctx.Done():
		t.Fatalf("Run did not return after ctx was cancelled mid-isolation (%d reports)", got.total.Load())
	}
	got.wait(ctx, t, n)
	inKafka := map[int]bool{}
	for _, seq := range seqs(t, readTopic(ctx, t, cluster.ListenAddrs(), 0))[0] {
		inKafka[seq] = true
	}
	for i := range n {
		if err, ok := got.one(t, uint64(i)); ok && err == nil && !inKafka[i] {
			t.Errorf("record %d reported acked but not in Kafka", i)
		}
	}
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	defer pcancel()
	if err := s.Produce(pctx, event(n, false), n); !errors.Is(err, ErrClosed) {
		t.Errorf("Produce after Run returned: %v, want ErrClosed", err)
	}
}

// TestRefusalAfterARetriableFailureIsNotIsolated pins an order hole: once
// a retriable failure ends the session (the next one resends from the
// slot), a batch refusal arriving after it started an isolation, whose
// producers sent records ahead of that resend. Such a refusal is reported
// as retriable instead, and nothing is held.
func TestRefusalAfterARetriableFailureIsNotIsolated(t *testing.T) {
	got := newFates()
	cfg := DefaultConfig()
	cfg.Brokers = []string{"127.0.0.1:1"}
	s, err := New(cfg, got.ack)
	if err != nil {
		t.Fatal(err)
	}
	mock := mocks.NewAsyncProducer(t, nil) // what a retirement would close
	pr := &producer{p: mock, gate: newGate(net.Dialer{}), handed: -1}
	defer func() {
		if !pr.retired {
			mock.Close()
		}
	}()
	record := func(token uint64, partition int32) *sarama.ProducerMessage {
		m := NewRecord(event(int(token), false), token)
		m.Partition = partition
		return m
	}
	if s.failedOrHeld(pr, &sarama.ProducerError{Msg: record(0, 0), Err: sarama.ErrNotEnoughReplicas}, false) {
		t.Fatal("a retriable failure was held")
	}
	if !pr.gate.isClosed() {
		t.Fatal("the gate is open after a retriable failure")
	}
	if s.failedOrHeld(pr, &sarama.ProducerError{Msg: record(1, 1), Err: sarama.ErrMessageSizeTooLarge}, false) || pr.retired {
		t.Fatal("a refusal after a retriable failure was held for isolation")
	}
	if err, ok := got.one(t, 1); ok && !IsRetriable(err) {
		t.Errorf("the refused record after a retriable failure: %v, want a retriable error", err)
	}
}

// TestHaltKeepsLaterRecordsOutOfKafka pins an order hole in halt mode
// (StopAtUndeliverable): sarama hands a refused batch's last error to the
// drain and at once unmutes the partition, so when the refused batch held
// one record (an oversized record alone in its batch, every batch of an
// isolation's last round) the partition's next request was written before
// the drain closed the gate, and the records after the halted one reached
// Kafka ahead of it (internal/faulttest TestBatchRefusalBlamesOneRecord/
// halt, about 1 run in 20). The hook holds the drain after that error
// until the next request reaches the broker (at most a second): no write
// may pass the gate meanwhile.
func TestHaltKeepsLaterRecordsOutOfKafka(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	if err := cluster.CreateTopic(limitedTopic, 1, map[string]string{"max.message.bytes": "2000"}); err != nil {
		t.Fatal(err)
	}
	arrived, release, next := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var produces atomic.Int32
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		switch produces.Add(1) {
		case 1: // the oversized record alone: held until the later ones queue
			close(arrived)
			cluster.SleepControl(func() { <-release })
		case 2:
			close(next)
		}
		return nil, nil, false
	})

	cfg := DefaultConfig()
	cfg.Brokers = cluster.ListenAddrs()
	cfg.StopAtUndeliverable = true
	got := newFates()
	s, err := New(cfg, got.ack)
	if err != nil {
		t.Fatal(err)
	}
	var first atomic.Bool
	s.testHookError = func(*sarama.ProducerError) {
		if first.CompareAndSwap(false, true) {
			select {
			case <-next:
			case <-time.After(time.Second):
			}
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	defer func() { stop(); <-done }()

	const later = 3
	if err := s.Produce(ctx, event(0, true), 0); err != nil {
		t.Fatal(err)
	}
	<-arrived
	for i := 1; i <= later; i++ {
		if err := s.Produce(ctx, event(i, false), uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	close(release)

	got.wait(ctx, t, 1+later)
	if err, ok := got.one(t, 0); ok && (IsRetriable(err) || !errors.Is(err, sarama.ErrMessageSizeTooLarge)) {
		t.Errorf("the oversized record: %v, want a final MESSAGE_TOO_LARGE", err)
	}
	for i := uint64(1); i <= later; i++ {
		if err, ok := got.one(t, i); ok && (err == nil || !IsRetriable(err)) {
			t.Errorf("record %d after the undeliverable one: %v, want it failed retriably (resent by the next session)", i, err)
		}
	}
	if recs := readTopic(ctx, t, cluster.ListenAddrs(), 0); len(recs) > 0 {
		t.Errorf("the partition holds %v, records produced after the undeliverable one; want none", seqs(t, recs)[0])
	}
}
