package kafkatest_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
)

func newProducer(t *testing.T, addrs []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func produce(ctx context.Context, t *testing.T, cl *kgo.Client, topic string, from, to int) {
	t.Helper()
	var recs []*kgo.Record
	for i := from; i < to; i++ {
		recs = append(recs, &kgo.Record{
			Topic: topic,
			Key:   fmt.Appendf(nil, "k%d", i%4),
			Value: fmt.Appendf(nil, "v%d", i),
			Headers: []kgo.RecordHeader{
				{Key: "event-id", Value: fmt.Appendf(nil, "id-%d", i)},
				{Key: "type", Value: []byte("test")},
			},
		})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

func checkRecords(t *testing.T, recs []kafkatest.Record, topic string, n int) {
	t.Helper()
	if len(recs) != n {
		t.Fatalf("got %d records, want %d", len(recs), n)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		if r.Topic != topic {
			t.Fatalf("record from unexpected topic %q", r.Topic)
		}
		if r.Headers["type"] != "test" {
			t.Fatalf("record %s[%d]@%d headers = %v", r.Topic, r.Partition, r.Offset, r.Headers)
		}
		id := r.Headers["event-id"]
		if want := "id-" + string(r.Value[1:]); id != want {
			t.Fatalf("event-id %q does not match value %q", id, r.Value)
		}
		if seen[id] {
			t.Fatalf("duplicate %s", id)
		}
		seen[id] = true
		if r.Timestamp.IsZero() {
			t.Fatal("zero timestamp")
		}
	}
}

// waitCount polls Count until it reports want or ctx ends.
func waitCount(ctx context.Context, t *testing.T, addrs, topics []string, want int64) {
	t.Helper()
	var (
		got int64
		err error
	)
	if !eventually.True(ctx, 20*time.Millisecond, func() bool {
		got, err = kafkatest.Count(ctx, addrs, topics)
		return err == nil && got == want
	}) {
		t.Fatalf("Count = %d (err %v), want %d", got, err, want)
	}
}

func TestProduceReadRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	b := kafkatest.New(t, kafkatest.Options{
		DataDir: filepath.Join(t.TempDir(), "kfake"),
		Topics:  []string{"seeded"},
	})
	addrs := b.Addrs()
	prod := newProducer(t, addrs)
	produce(ctx, t, prod, "events", 0, 10)

	recs, err := kafkatest.ReadAll(ctx, addrs, []string{"events"}, 10)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, recs, "events", 10)
	waitCount(ctx, t, addrs, []string{"events"}, 10)
	waitCount(ctx, t, addrs, nil, 10) // "seeded" exists and is empty
	waitCount(ctx, t, addrs, []string{"events", "missing"}, 10)

	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := b.Addrs(); got[0] != addrs[0] {
		t.Fatalf("address changed across restart: %v -> %v", addrs, got)
	}
	recs, err = kafkatest.ReadAll(ctx, addrs, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, recs, "events", 10)

	// The producer from before the restart reconnects and keeps going.
	produce(ctx, t, prod, "events", 10, 15)
	recs, err = kafkatest.ReadAll(ctx, addrs, []string{"events"}, 15)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, recs, "events", 15)
	waitCount(ctx, t, addrs, []string{"seeded"}, 0)

	partitions := map[int32]bool{}
	for _, r := range recs {
		partitions[r.Partition] = true
	}
	for p := range partitions {
		if p < 0 || p >= kafkatest.DefaultPartitions {
			t.Fatalf("partition %d outside default count %d", p, kafkatest.DefaultPartitions)
		}
	}
}

func TestReadAllSeesNewTopics(t *testing.T) {
	kafkatest.RequireKfake(t, "a hook on the reader's first metadata request")
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	b := kafkatest.New(t, kafkatest.Options{Partitions: 1})

	// Produce only after the reader fetched metadata, so it must discover
	// the topic on a later refresh.
	readerAsked := make(chan struct{})
	var once sync.Once
	b.Cluster().ControlKey(kmsg.Metadata.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.Cluster().DropControl()
		once.Do(func() { close(readerAsked) })
		return nil, nil, false
	})

	type result struct {
		recs []kafkatest.Record
		err  error
	}
	done := make(chan result, 1)
	go func() {
		recs, err := kafkatest.ReadAll(ctx, b.Addrs(), nil, 3)
		done <- result{recs, err}
	}()
	select {
	case <-readerAsked:
	case <-ctx.Done():
		t.Fatal("reader sent no metadata request")
	}
	produce(ctx, t, newProducer(t, b.Addrs()), "late", 0, 3)
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	checkRecords(t, res.recs, "late", 3)
	for i, r := range res.recs {
		if r.Partition != 0 || r.Offset != int64(i) {
			t.Fatalf("record %d at %d@%d, want 0@%d", i, r.Partition, r.Offset, i)
		}
	}
}

func TestReadAllTimeout(t *testing.T) {
	t.Parallel()
	b := kafkatest.New(t, kafkatest.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	produce(ctx, t, newProducer(t, b.Addrs()), "few", 0, 2)

	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	recs, err := kafkatest.ReadAll(short, b.Addrs(), []string{"few"}, 5)
	if err == nil {
		t.Fatal("ReadAll returned no error with too few records")
	}
	if len(recs) != 2 {
		t.Fatalf("got %d records with the error %v, want 2", len(recs), err)
	}
	t.Log(err)

	if err := b.Restart(); err == nil {
		t.Fatal("Restart without DataDir succeeded")
	}
}
