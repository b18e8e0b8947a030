package sink

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
)

// maxMissingTopics bounds MissingTopics; past it a topic is forgotten (a
// later record to it starts a new wait), see evict.
const maxMissingTopics = 1000

// MissingTopics remembers since when each topic Kafka does not know has
// been missing, so that Config.TopicWait is measured from the first time
// a record to it failed, not from each session's: the relay builds a new
// Sink per session, and a missing topic ends the session (see
// TopicWaitError). Create one per process and pass it to every sink with
// WithMissingTopics, as wire.Relay does:
//
//	missing := sink.NewMissingTopics()
//	sink.New(cfg, ack, sink.WithMissingTopics(missing))
//
// A topic is forgotten once a record to it is acked. Topic names come from
// row values, so it holds at most maxMissingTopics of them. It is safe for
// concurrent use; an ack takes no lock while no topic is missing.
type MissingTopics struct {
	mu    sync.Mutex
	since map[string]time.Time
	n     atomic.Int64 // len(since)
}

// NewMissingTopics returns an empty MissingTopics.
func NewMissingTopics() *MissingTopics {
	return &MissingTopics{since: make(map[string]time.Time)}
}

// WithMissingTopics makes the sink share m, and so its waits for missing
// topics, with the other sinks given m. Without it a sink remembers alone,
// and each new sink starts every wait over.
func WithMissingTopics(m *MissingTopics) Option {
	return func(s *Sink) { s.missing = m }
}

// missingFor notes that topic was found missing at now and returns how
// long it has been missing: 0 the first time. wait is the topic wait, for
// choosing what to forget when full.
func (m *MissingTopics) missingFor(topic string, now time.Time, wait time.Duration) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	first, ok := m.since[topic]
	if !ok {
		if len(m.since) >= maxMissingTopics {
			m.evict(now, wait)
		}
		m.since[topic], first = now, now
		m.n.Store(int64(len(m.since)))
	}
	return max(now.Sub(first), 0)
}

// evict drops one topic to make room: one already past its wait when
// there is one (its records are final already; a later one waits anew),
// else the one found missing last. Never the one found missing first while
// it waits: a session ends at its first missing topic in WAL order, the
// oldest entry, and forgetting it would restart its wait every session, so
// it would never end. Called with mu held, only when the map is full.
func (m *MissingTopics) evict(now time.Time, wait time.Duration) {
	var newest string
	var newestAt time.Time
	for t, since := range m.since {
		if now.Sub(since) >= wait {
			delete(m.since, t)
			return
		}
		if newestAt.IsZero() || since.After(newestAt) {
			newest, newestAt = t, since
		}
	}
	delete(m.since, newest)
}

// found forgets topic: a record to it was acked.
func (m *MissingTopics) found(topic string) {
	if m.n.Load() == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.since, topic)
	m.n.Store(int64(len(m.since)))
}

// roundWait rounds a wait for a message.
func roundWait(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }

// waitForTopic returns err, a record's failure to topic, or, when err says
// the topic does not exist and the topic has been missing for less than
// wait, a retriable *TopicWaitError. A failure past the wait says how
// long the topic was missing. Called on Run's goroutine.
func waitForTopic(m *MissingTopics, wait time.Duration, topic string, err error, now time.Time) error {
	if wait <= 0 || !errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
		return err
	}
	missing := m.missingFor(topic, now, wait)
	if missing >= wait {
		return fmt.Errorf("%w (the topic has been missing for %s; the topic wait is %s)", err, roundWait(missing), wait)
	}
	return &TopicWaitError{Topic: topic, Missing: missing, Left: wait - missing, Err: err}
}
