package sink

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// MaxTopicLabels is how many distinct topics a metric's topic label keeps.
const MaxTopicLabels = 100

// OtherTopics is the topic label of every topic past the first
// MaxTopicLabels. Kafka topic names cannot hold parentheses, so it never
// names a real topic.
const OtherTopics = "(other)"

// TopicLabels bounds the topic label of a metric family: the first n
// distinct topics keep their names, every later one is counted as
// OtherTopics. Topic names come from row values (a template such as
// outbox.{aggregate_id}), and Prometheus keeps each label value as a
// series for the life of the process. The relay's metrics use it too.
//
// Label is safe for concurrent use and takes no lock for a topic already
// known or once the cap is reached: the known set is an immutable map
// behind an atomic pointer, replaced on each of at most n admissions.
type TopicLabels struct {
	max   int
	known atomic.Pointer[map[string]struct{}]
	full  atomic.Bool
	mu    sync.Mutex // serialises admissions
}

// NewTopicLabels keeps up to n topics (at least 1).
func NewTopicLabels(n int) *TopicLabels {
	l := &TopicLabels{max: max(n, 1)}
	l.known.Store(&map[string]struct{}{})
	return l
}

// Label returns topic, or OtherTopics once n other topics were seen.
func (l *TopicLabels) Label(topic string) string {
	if _, ok := (*l.known.Load())[topic]; ok {
		return topic
	}
	if l.full.Load() {
		return OtherTopics
	}
	return l.admit(topic)
}

func (l *TopicLabels) admit(topic string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	known := *l.known.Load()
	if _, ok := known[topic]; ok {
		return topic
	}
	if len(known) >= l.max {
		l.full.Store(true)
		return OtherTopics
	}
	next := make(map[string]struct{}, len(known)+1)
	for t := range known {
		next[t] = struct{}{}
	}
	next[topic] = struct{}{}
	l.known.Store(&next)
	return topic
}

// TopicCounters is a counter family whose topic label TopicLabels bounds,
// with each topic's counter cached: looking it up in the family hashes the
// label and takes a lock, per event (5% of the relay's CPU in a drain).
// The cache holds at most the labels' cap plus OtherTopics.
type TopicCounters struct {
	labels *TopicLabels
	vec    *prometheus.CounterVec
	cached atomic.Pointer[map[string]prometheus.Counter]
	other  atomic.Pointer[prometheus.Counter]
	mu     sync.Mutex // serialises additions to cached
}

// NewTopicCounters counts by topic in vec, labelled through labels.
func NewTopicCounters(labels *TopicLabels, vec *prometheus.CounterVec) *TopicCounters {
	c := &TopicCounters{labels: labels, vec: vec}
	c.cached.Store(&map[string]prometheus.Counter{})
	return c
}

// Inc counts one event for topic.
func (c *TopicCounters) Inc(topic string) { c.counter(topic).Inc() }

func (c *TopicCounters) counter(topic string) prometheus.Counter {
	if ctr, ok := (*c.cached.Load())[topic]; ok {
		return ctr
	}
	label := c.labels.Label(topic)
	if label == OtherTopics {
		if p := c.other.Load(); p != nil {
			return *p
		}
		ctr := c.vec.WithLabelValues(OtherTopics)
		c.other.Store(&ctr)
		return ctr
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cached := *c.cached.Load()
	if ctr, ok := cached[topic]; ok {
		return ctr
	}
	next := make(map[string]prometheus.Counter, len(cached)+1)
	for t, ctr := range cached {
		next[t] = ctr
	}
	ctr := c.vec.WithLabelValues(label)
	next[topic] = ctr
	c.cached.Store(&next)
	return ctr
}
