package sink

import (
	"fmt"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
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

// TestTopicCountersCountIntoBoundedSeries: the cached counters count into
// the series the label names, and share one bound when two families share
// the labels (produced and acked).
func TestTopicCountersCountIntoBoundedSeries(t *testing.T) {
	labels := NewTopicLabels(2)
	reg := prometheus.NewRegistry()
	newVec := func(name string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: "x"}, []string{"topic"})
		reg.MustRegister(v)
		return v
	}
	a, b := NewTopicCounters(labels, newVec("a_total")), NewTopicCounters(labels, newVec("b_total"))
	for _, topic := range []string{"t1", "t2", "t3", "t1", "t4", "t2", "t1"} {
		a.Inc(topic)
	}
	b.Inc("t3")
	b.Inc("t2")
	got := map[string]float64{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			got[f.GetName()+"/"+m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"a_total/t1": 3, "a_total/t2": 2, "a_total/" + OtherTopics: 2, "b_total/t2": 1, "b_total/" + OtherTopics: 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("series %v, want %v", got, want)
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
