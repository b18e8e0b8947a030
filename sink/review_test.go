package sink

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// Pins the bound on MissingTopics forgetting the very topic that holds
// the relay: a session ends at its first missing topic (in WAL order, the
// oldest), and the sink notes every other missing topic of the in-flight
// window as its records fail. With more than maxMissingTopics of them
// (routing by a column with many values, auto-create off), each session
// evicts the oldest entry, which is that first topic, so its next failure
// starts its wait over: the wait never ends, the relay reconnects and
// resends forever, and neither halts nor dead-letters.
func TestTopicWaitEndsWithManyMissingTopics(t *testing.T) {
	const wait = time.Minute
	unknown := fmt.Errorf("topic: %w", sarama.ErrUnknownTopicOrPartition)
	m := NewMissingTopics()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for session := range 30 {
		now := t0.Add(time.Duration(session) * 5 * time.Second)
		// The window fails in WAL order: the blocking topic first.
		first := waitForTopic(m, wait, "outbox.event.t0", unknown, now)
		if now.Sub(t0) >= wait {
			if IsRetriable(first) {
				var tw *TopicWaitError
				errors.As(first, &tw)
				t.Fatalf("session %d, %s after the topic first went missing: still waiting (missing for %s by the sink's count): "+
					"the wait restarts every session and never ends", session, now.Sub(t0), tw.Missing)
			}
			return
		}
		for i := 1; i <= maxMissingTopics+200; i++ {
			waitForTopic(m, wait, fmt.Sprintf("outbox.event.t%d", i), unknown, now.Add(time.Duration(i)*time.Microsecond))
		}
	}
}
