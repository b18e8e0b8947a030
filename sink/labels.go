package sink

import (
	"sync"
	"sync/atomic"
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
