package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-relay/outbox-relay/internal/apachekafka"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
)

// The topics scenario routes by aggregate id, so a backlog spread over N
// aggregates lands in N topics, each created by the broker on the relay's
// first metadata request for it (auto-create, 3 partitions: kfake's
// kafkatest default and the Apache node's num.partitions).
const (
	topicsPrefix   = "outbox.event."
	topicsTemplate = topicsPrefix + "{aggregate_id}"
	// The end of a topics run is checked every topicsPoll, or
	// topicsPollShare of the time since the relay started, or
	// topicsPollCost times as long as the last check took, whichever is
	// longest: a check lists thousands of partitions (6 ms of CPU for
	// 2,000 topics with kfake), and a 10 ms poll would take the CPU the
	// relay is measured with.
	topicsPoll      = 10 * time.Millisecond
	topicsPollShare = 0.01
	topicsPollCost  = 10
)

// topicsResult is one topic count: every binary on the same backlog, the
// median run of each.
type topicsResult struct {
	count   int // aggregates, so topics
	runs    int
	backlog backlog
	relays  []binRun // one per binary, in suite.bins order
	load    string
}

// metricSeries counts the sample lines of the relay's /metrics: the
// series Prometheus would store.
type metricSeries struct {
	topic int // with a topic label
	total int
}

// topicsScenario writes -topics-n events over count aggregates while no
// reader runs, then drains it -runs times with each binary, each from its
// own slot into a broker without any outbox.event.* topic. A run ends
// when the high watermarks of all outbox.event.* topics sum to the
// backlog (see prefixCounter); the relay's /metrics is read once then.
func (s *suite) topicsScenario(ctx context.Context, count int) (topicsResult, error) {
	n := s.o.topicsN
	res := topicsResult{count: count, runs: s.o.runs}
	name := fmt.Sprintf("topics-%d", count)
	db, err := s.newDatabase(ctx, name, s.o.runs)
	if err != nil {
		return res, err
	}
	defer db.Close(s)
	s.logf("%s: writing %d events over %d aggregates (%d per transaction, %d B payloads)", name, n, count, s.o.txRows, s.o.payload)
	if res.backlog, err = s.load(ctx, db, n, s.o.txRows, s.o.payload, count); err != nil {
		return res, err
	}
	runs := make(map[relayBin][]readerRun)
	for i := range s.o.runs {
		for _, bin := range s.order() {
			r, err := s.topicsRun(ctx, bin, db, db.slot(bin.slot, i), n, min(n, count))
			if err != nil {
				return res, fmt.Errorf("%s: %w", bin.label, err)
			}
			s.logf("%s: %s %s, %d series with a topic label of %d", name, bin.label, r.elapsed.Round(1e6), r.series.topic, r.series.total)
			runs[bin] = append(runs[bin], r)
		}
	}
	for _, bin := range s.bins() {
		res.relays = append(res.relays, binRun{bin.label, median(runs[bin])})
	}
	res.load = loadAvg()
	return res, nil
}

// topicsRun is one binary's drain of the topics backlog: n events into
// topics topics.
func (s *suite) topicsRun(ctx context.Context, bin relayBin, db *database, slot string, n, topics int) (readerRun, error) {
	b, err := s.freshTopicsBroker(ctx)
	if err != nil {
		return readerRun{}, err
	}
	defer b.Close()
	c, err := newPrefixCounter(b.Addrs(), topicsPrefix, topics, int64(n), s.committed())
	if err != nil {
		return readerRun{}, err
	}
	defer c.Close()
	var series metricSeries
	r, err := s.runRelay(ctx, relayRun{bin: bin, db: db, slot: slot, broker: b, counter: c,
		poll: topicsPoll, pollShare: topicsPollShare, pollCost: topicsPollCost, want: int64(n),
		args: []string{"--topic", topicsTemplate},
		atEnd: func(p *relayProc) error {
			if err := c.check(ctx); err != nil {
				return err
			}
			var err error
			series, err = scrapeSeries(ctx, p.metrics)
			return err
		}})
	r.series = series
	return r, err
}

// freshTopicsBroker returns a broker holding no outbox.event.* topic: a
// new kfake (auto-create on, 3 partitions), or the suite's Apache Kafka
// node with those topics deleted (and deleted again by Close, so later
// scenarios do not run beside thousands of topics).
func (s *suite) freshTopicsBroker(ctx context.Context) (broker, error) {
	if s.kafka == nil {
		b, err := kafkatest.Start(kafkatest.Options{Partitions: partitions})
		if err != nil {
			return nil, err
		}
		return kfakeBroker{b}, nil
	}
	if err := deletePrefixTopics(ctx, s.kafka, topicsPrefix); err != nil {
		return nil, err
	}
	return apacheTopicsBroker{apacheBroker{s.kafka}, s}, nil
}

// apacheTopicsBroker is apacheBroker whose Close deletes the run's topics.
type apacheTopicsBroker struct {
	apacheBroker
	s *suite
}

func (b apacheTopicsBroker) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := deletePrefixTopics(ctx, b.c, topicsPrefix); err != nil {
		b.s.logf("topics: delete the outbox.event.* topics: %v", err)
	}
}

// deletePrefixTopics deletes every topic whose name starts with prefix
// and waits until the broker lists none.
func deletePrefixTopics(ctx context.Context, c *apachekafka.Cluster, prefix string) error {
	cl, err := c.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		names, err := listPrefixTopics(ctx, cl, prefix)
		if err != nil || len(names) == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("delete topics: %d %s* topics still listed after 2 minutes", len(names), prefix)
		}
		req := kmsg.NewPtrDeleteTopicsRequest()
		req.TimeoutMillis = 60000
		for _, name := range names {
			rt := kmsg.NewDeleteTopicsRequestTopic()
			rt.Topic = kmsg.StringPtr(name)
			req.Topics, req.TopicNames = append(req.Topics, rt), append(req.TopicNames, name)
		}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return fmt.Errorf("delete %d topics: %w", len(names), err)
		}
		for _, t := range resp.Topics {
			if err := kerr.ErrorForCode(t.ErrorCode); err != nil && !errors.Is(err, kerr.UnknownTopicOrPartition) {
				return fmt.Errorf("delete topic %q: %w", deref(t.Topic), err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// listPrefixTopics lists the broker's topics whose names start with
// prefix, sorted.
func listPrefixTopics(ctx context.Context, cl *kgo.Client, prefix string) ([]string, error) {
	meta, err := prefixMetadata(ctx, cl, prefix)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(meta))
	for _, t := range meta {
		names = append(names, *t.Topic)
	}
	slices.Sort(names)
	return names, nil
}

// prefixMetadata is the metadata of every topic whose name starts with
// prefix, without asking the broker to create any.
func prefixMetadata(ctx context.Context, cl *kgo.Client, prefix string) ([]kmsg.MetadataResponseTopic, error) {
	req := kmsg.NewPtrMetadataRequest() // nil Topics: all of them
	req.AllowAutoTopicCreation = false
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	var out []kmsg.MetadataResponseTopic
	for _, t := range resp.Topics {
		if t.Topic != nil && strings.HasPrefix(*t.Topic, prefix) {
			out = append(out, t)
		}
	}
	return out, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// scrapeSeries reads the relay's /metrics once and counts its sample
// lines, and those with a topic label.
func scrapeSeries(ctx context.Context, addr string) (metricSeries, error) {
	body, err := getMetrics(ctx, addr)
	if err != nil {
		return metricSeries{}, err
	}
	return countSeries(body), nil
}

// getMetrics reads the relay's /metrics (at most 64 MiB).
func getMetrics(ctx context.Context, addr string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return "", err
	}
	// Uncompressed: gzip costs the relay CPU while it is measured.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("scrape the relay's /metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return "", fmt.Errorf("scrape the relay's /metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("scrape the relay's /metrics: %s", resp.Status)
	}
	return string(body), nil
}

// countSeries counts the sample lines of a Prometheus text exposition
// (comments and blank lines are not series), and those whose labels
// include topic (exactly that name: original_topic would not count).
func countSeries(text string) metricSeries {
	var m metricSeries
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m.total++
		name, labels, ok := strings.Cut(line, "{")
		if !ok || strings.ContainsAny(name, " \t") {
			continue
		}
		if strings.HasPrefix(labels, `topic="`) || strings.Contains(labels, `,topic="`) {
			m.topic++
		}
	}
	return m
}
