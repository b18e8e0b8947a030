package kafkatest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Record is a consumed record, detached from franz-go types.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	// Headers holds the record headers; for a repeated key the last value
	// wins.
	Headers   map[string]string
	Timestamp time.Time
}

// ReadAll consumes topics from the beginning until it has at least want
// records or ctx ends, and returns the records sorted by topic, partition
// and offset. With nil (or empty) topics it reads every non-internal topic,
// including topics created while it reads.
//
// It uses a fresh client with no consumer group, at read_committed
// isolation (so aborted or still-open transactions are not returned), and
// refreshes metadata often so new topics and partitions are picked up. When
// ctx ends first it returns what it has together with an error saying how
// many records it got.
func ReadAll(ctx context.Context, addrs []string, topics []string, want int) ([]Record, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(addrs...),
		kgo.ClientID("kafkatest-reader"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.MetadataMinAge(100 * time.Millisecond),
		kgo.MetadataMaxAge(time.Second),
		kgo.FetchMaxWait(250 * time.Millisecond),
	}
	if len(topics) == 0 {
		// kgo never matches internal topics with a regex, and re-evaluates
		// the regex on every metadata refresh.
		opts = append(opts, kgo.ConsumeRegex(), kgo.ConsumeTopics(".*"))
	} else {
		opts = append(opts, kgo.ConsumeTopics(topics...))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: new reader: %w", err)
	}
	defer cl.Close()

	var (
		recs    []Record
		lastErr error
	)
	for len(recs) < want && ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				lastErr = fmt.Errorf("%s[%d]: %w", topic, partition, err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) { recs = append(recs, toRecord(r)) })
	}
	slices.SortFunc(recs, func(a, b Record) int {
		return cmp.Or(
			cmp.Compare(a.Topic, b.Topic),
			cmp.Compare(a.Partition, b.Partition),
			cmp.Compare(a.Offset, b.Offset),
		)
	})
	if len(recs) < want {
		err := fmt.Errorf("kafkatest: got %d of %d records from %v: %w", len(recs), want, topicsOrAll(topics), ctx.Err())
		if lastErr != nil {
			err = fmt.Errorf("%w (last fetch error: %v)", err, lastErr)
		}
		return recs, err
	}
	return recs, nil
}

func toRecord(r *kgo.Record) Record {
	rec := Record{
		Topic:     r.Topic,
		Partition: r.Partition,
		Offset:    r.Offset,
		Key:       r.Key,
		Value:     r.Value,
		Timestamp: r.Timestamp,
	}
	if len(r.Headers) > 0 {
		rec.Headers = make(map[string]string, len(r.Headers))
		for _, h := range r.Headers {
			rec.Headers[h.Key] = string(h.Value)
		}
	}
	return rec
}

func topicsOrAll(topics []string) any {
	if len(topics) == 0 {
		return "all topics"
	}
	return topics
}

// Count returns the sum of the high watermarks of all partitions of topics
// (every non-internal topic when topics is nil), which is the number of
// records written as long as nothing was deleted and no transactions were
// used (transaction markers occupy offsets too). Topics that do not exist
// count as zero, so Count can be polled while a producer starts up.
func Count(ctx context.Context, addrs []string, topics []string) (int64, error) {
	ends, err := EndOffsets(ctx, addrs, topics)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, ps := range ends {
		for _, off := range ps {
			total += off
		}
	}
	return total, nil
}

// EndOffsets returns the high watermark of each partition of topics (every
// non-internal topic when topics is nil), by topic and partition: the
// offset the next record appended there will get. Topics that do not exist
// are left out.
func EndOffsets(ctx context.Context, addrs []string, topics []string) (map[string]map[int32]int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ClientID("kafkatest-count"))
	if err != nil {
		return nil, fmt.Errorf("kafkatest: new client: %w", err)
	}
	defer cl.Close()

	meta := kmsg.NewPtrMetadataRequest()
	meta.AllowAutoTopicCreation = false
	for _, t := range topics { // nil Topics asks for every topic
		mt := kmsg.NewMetadataRequestTopic()
		mt.Topic = kmsg.StringPtr(t)
		meta.Topics = append(meta.Topics, mt)
	}
	metaResp, err := meta.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: metadata: %w", err)
	}

	list := kmsg.NewPtrListOffsetsRequest()
	list.ReplicaID = -1
	for _, t := range metaResp.Topics {
		if t.Topic == nil || (len(topics) == 0 && t.IsInternal) {
			continue
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			if errors.Is(err, kerr.UnknownTopicOrPartition) {
				continue
			}
			return nil, fmt.Errorf("kafkatest: metadata for %s: %w", *t.Topic, err)
		}
		lt := kmsg.NewListOffsetsRequestTopic()
		lt.Topic = *t.Topic
		for _, p := range t.Partitions {
			lp := kmsg.NewListOffsetsRequestTopicPartition()
			lp.Partition = p.Partition
			lp.Timestamp = -1 // latest: the high watermark
			lt.Partitions = append(lt.Partitions, lp)
		}
		list.Topics = append(list.Topics, lt)
	}
	ends := map[string]map[int32]int64{}
	if len(list.Topics) == 0 {
		return ends, nil
	}
	listResp, err := list.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: list offsets: %w", err)
	}
	for _, t := range listResp.Topics {
		ends[t.Topic] = map[int32]int64{}
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return nil, fmt.Errorf("kafkatest: list offsets %s[%d]: %w", t.Topic, p.Partition, err)
			}
			ends[t.Topic][p.Partition] = p.Offset
		}
	}
	return ends, nil
}

// sentinelHeader marks the records ReadCommitted writes to find the end.
const sentinelHeader = "kafkatest-sentinel"

// ReadCommitted returns every record of topics a read_committed consumer
// sees up to now, sorted like ReadAll. Offsets cannot tell when that is
// (transaction markers take offsets and are never returned, aborted records
// are skipped), so it first writes a sentinel record outside any
// transaction to every partition, then reads until it has seen each one; a
// read_committed consumer reaches a sentinel only once every transaction
// before it is decided. The sentinels are left in the topics and not
// returned.
func ReadCommitted(ctx context.Context, addrs []string, topics []string) ([]Record, error) {
	n, err := writeSentinels(ctx, addrs, topics)
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ClientID("kafkatest-reader"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(250*time.Millisecond), kgo.ConsumeTopics(topics...))
	if err != nil {
		return nil, fmt.Errorf("kafkatest: new reader: %w", err)
	}
	defer cl.Close()
	var recs []Record
	seen := 0
	for seen < n && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			rec := toRecord(r)
			if _, ok := rec.Headers[sentinelHeader]; ok {
				seen++
				return
			}
			recs = append(recs, rec)
		})
	}
	slices.SortFunc(recs, func(a, b Record) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	if seen < n {
		return recs, fmt.Errorf("kafkatest: read_committed reached %d of %d partition ends of %v: %w", seen, n, topics, ctx.Err())
	}
	return recs, nil
}

// writeSentinels writes one sentinel record to every partition of topics
// and returns how many it wrote.
func writeSentinels(ctx context.Context, addrs []string, topics []string) (int, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ClientID("kafkatest-sentinel"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return 0, fmt.Errorf("kafkatest: new sentinel producer: %w", err)
	}
	defer cl.Close()
	meta := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		mt := kmsg.NewMetadataRequestTopic()
		mt.Topic = kmsg.StringPtr(t)
		meta.Topics = append(meta.Topics, mt)
	}
	resp, err := meta.RequestWith(ctx, cl)
	if err != nil {
		return 0, fmt.Errorf("kafkatest: metadata: %w", err)
	}
	var recs []*kgo.Record
	for _, t := range resp.Topics {
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return 0, fmt.Errorf("kafkatest: metadata for %s: %w", *t.Topic, err)
		}
		for _, p := range t.Partitions {
			recs = append(recs, &kgo.Record{Topic: *t.Topic, Partition: p.Partition,
				Headers: []kgo.RecordHeader{{Key: sentinelHeader, Value: []byte("end")}}})
		}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return 0, fmt.Errorf("kafkatest: write sentinels: %w", err)
	}
	return len(recs), nil
}
