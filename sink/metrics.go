package sink

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// topicsCapped ends the help of a metric with a topic label.
var topicsCapped = fmt.Sprintf("; the first %d topics keep their name, later ones count as %q.", MaxTopicLabels, OtherTopics)

// Metrics are the sink's instruments. Create them once per process and share
// them across reconnects.
type Metrics struct {
	// produced and acked share one bound on their topic label.
	produced *TopicCounters
	acked    *TopicCounters
	errors   *prometheus.CounterVec
	retries  prometheus.Counter
	// isolations counts batches refused whole and resent one per request.
	isolations prometheus.Counter
	latency    prometheus.Histogram
	// The exactly-once producer's (Txn).
	transactions     *prometheus.CounterVec
	txnCommitSeconds prometheus.Histogram
	committedBefore  prometheus.Counter
	fenced           prometheus.Counter
}

// NewMetrics registers the sink's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	topics := NewTopicLabels(MaxTopicLabels)
	produced := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outbox_relay_sink_produced_total",
		Help: "Events handed to the Kafka producer, by topic (resends included)" + topicsCapped,
	}, []string{"topic"})
	acked := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outbox_relay_sink_acked_total",
		Help: "Events acknowledged by Kafka (acks=all), by topic" + topicsCapped,
	}, []string{"topic"})
	m := &Metrics{
		produced: NewTopicCounters(topics, produced),
		acked:    NewTopicCounters(topics, acked),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_relay_sink_errors_total",
			Help: "Events whose produce failed after retries, by kind (retriable, undeliverable).",
		}, []string{"kind"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_sink_retries_total",
			Help: "Batch retries inside the producer; growing means Kafka is refusing or unreachable.",
		}),
		isolations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_sink_batch_isolations_total",
			Help: "Batches Kafka refused whole, whose records were resent one per request to find the one it refuses.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outbox_relay_sink_commit_to_ack_seconds",
			Help:    "Time from the Postgres commit of an event to its Kafka ack.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_relay_sink_transactions_total",
			Help: "Kafka transactions of the exactly-once producer, by outcome (committed, aborted).",
		}, []string{"outcome"}),
		txnCommitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outbox_relay_sink_transaction_commit_seconds",
			Help:    "Time the exactly-once producer takes to commit a Kafka transaction (its records flushed, then EndTxn).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		committedBefore: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_sink_already_committed_total",
			Help: "Events Postgres re-sent that the exactly-once position says Kafka already holds: dropped, not written again.",
		}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_sink_fenced_total",
			Help: "Times another producer with the same transactional.id (another relay that took the slot over) fenced this one.",
		}),
	}
	if reg != nil {
		reg.MustRegister(produced, acked, m.errors, m.retries, m.isolations, m.latency,
			m.transactions, m.txnCommitSeconds, m.committedBefore, m.fenced)
	}
	return m
}
