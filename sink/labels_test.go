package sink

import (
	"fmt"
	"sync"
	"testing"
)

// TestTopicLabelsAreBounded pins unbounded metric series: the topic label
// came from row values (a topic template over aggregate ids, auto-created
// topics), so every new topic added series for the life of the process.
func TestTopicLabelsAreBounded(t *testing.T) {
	l := NewTopicLabels(3)
	for i, tc := range []struct{ topic, want string }{
		{"a", "a"}, {"b", "b"}, {"a", "a"}, {"", ""}, // "" (unroutable) counts as one
		{"c", OtherTopics}, {"d", OtherTopics},
		{"b", "b"}, {"", ""}, // known ones keep their name after the cap
	} {
		if got := l.Label(tc.topic); got != tc.want {
			t.Errorf("step %d: Label(%q) = %q, want %q", i, tc.topic, got, tc.want)
		}
	}
}

func TestTopicLabelsConcurrent(t *testing.T) {
	l := NewTopicLabels(MaxTopicLabels)
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				label := l.Label(fmt.Sprintf("topic.%d", (i*7+g)%500))
				mu.Lock()
				seen[label] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != MaxTopicLabels+1 || !seen[OtherTopics] {
		t.Fatalf("%d distinct labels (other: %v), want %d topics and %q", len(seen), seen[OtherTopics], MaxTopicLabels, OtherTopics)
	}
}

func BenchmarkTopicLabelKnown(b *testing.B) {
	l := NewTopicLabels(MaxTopicLabels)
	l.Label("outbox.event.order")
	b.ReportAllocs()
	for b.Loop() {
		l.Label("outbox.event.order")
	}
}
