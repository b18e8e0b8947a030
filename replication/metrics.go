package replication

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the stream's instruments. Create them once per process and
// share them across reconnects: a registry refuses a second registration.
type Metrics struct {
	skipped       *prometheus.CounterVec
	receivedLSN   prometheus.Gauge
	confirmedLSN  prometheus.Gauge
	lastMessage   prometheus.Gauge
	statusUpdates prometheus.Counter
	// commitToReceive is Postgres' share of an event's latency: its
	// commit until the relay decoded it (the walsender's wait for a CPU
	// and its decoding; a backlog's age while catching up).
	commitToReceive prometheus.Histogram
}

// NewMetrics registers the stream's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_relay_replication_skipped_changes_total",
			Help: "Changes received and deliberately not produced, by kind (update, delete, truncate, other_table, logical_message).",
		}, []string{"kind"}),
		receivedLSN: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_replication_received_lsn",
			Help: "WAL position of the last message received from Postgres, as a number.",
		}),
		confirmedLSN: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_replication_confirmed_lsn",
			Help: "WAL position last confirmed to Postgres in a standby status update, as a number.",
		}),
		lastMessage: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_replication_last_message_timestamp_seconds",
			Help: "Unix time of the last event or keepalive received; time() minus this is the silence.",
		}),
		statusUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_replication_status_updates_total",
			Help: "Standby status updates sent to Postgres.",
		}),
		commitToReceive: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outbox_relay_replication_commit_to_receive_seconds",
			Help:    "Time from the Postgres commit of an event to the relay decoding it from the stream: Postgres' share of outbox_relay_sink_commit_to_ack_seconds.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.skipped, m.receivedLSN, m.confirmedLSN, m.lastMessage, m.statusUpdates, m.commitToReceive)
	}
	return m
}

// WithMetrics makes the stream record into m.
func WithMetrics(m *Metrics) Option {
	return func(s *Stream) { s.metrics = m }
}
