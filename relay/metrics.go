package relay

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/sink"
)

// Metrics are the relay's instruments, registered once per process.
type Metrics struct {
	reg        prometheus.Registerer
	received   *sink.TopicCounters
	acked      prometheus.Counter
	reconnects prometheus.Counter
	// deadLettered counts events whose dead-letter copy Kafka acked.
	deadLettered *prometheus.CounterVec
	sessionEnd   *prometheus.CounterVec
	phase        *prometheus.GaugeVec
}

// NewMetrics registers the relay's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	received := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outbox_relay_events_received_total",
		Help: fmt.Sprintf("Outbox events received from the replication stream (resends included), by routed topic; \"\" for rows that could not be routed; "+
			"the first %d topics keep their name, later ones count as %q.", sink.MaxTopicLabels, sink.OtherTopics),
	}, []string{"topic"})
	m := &Metrics{
		reg:      reg,
		received: sink.NewTopicCounters(sink.NewTopicLabels(sink.MaxTopicLabels), received),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_events_acked_total",
			Help: "Events acknowledged by Kafka.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_reconnects_total",
			Help: "Sessions ended by a retriable failure and restarted from the slot.",
		}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_relay_events_dead_lettered_total",
			Help: "Undeliverable events copied to the dead-letter topic (acked there), by cause (unmappable, refused).",
		}, []string{"cause"}),
		sessionEnd: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_relay_session_failures_total",
			Help: "Sessions ended by a failure, by cause (postgres, kafka, slot_active, config, undeliverable).",
		}, []string{"cause"}),
		phase: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outbox_relay_phase",
			Help: "1 for the relay's current phase (starting, streaming, stalled, standby, reconnecting, stopped), 0 for the others.",
		}, []string{"phase"}),
	}
	if reg != nil {
		reg.MustRegister(received, m.acked, m.reconnects, m.deadLettered, m.sessionEnd, m.phase)
	}
	return m
}

// observe adds the gauges read from the relay's current session.
func (m *Metrics) observe(r *Relay) {
	if m.reg == nil {
		return
	}
	read := func(f func(*Relay) float64) func() float64 { return func() float64 { return f(r) } }
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outbox_relay_inflight_events",
			Help: "Events produced and not yet behind the confirmed position.",
		}, read(func(r *Relay) float64 {
			if t := r.tracker.Load(); t != nil {
				return float64(t.InFlight())
			}
			return 0
		})),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outbox_relay_inflight_bytes",
			Help: "Size (key, value, headers) of the in-flight events; capped by --max-in-flight-bytes.",
		}, read(func(r *Relay) float64 {
			if t := r.tracker.Load(); t != nil {
				return float64(t.InFlightBytes())
			}
			return 0
		})),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outbox_relay_inflight_peak_bytes",
			Help: "Highest in-flight bytes of the current session; never above --max-in-flight-bytes but for one oversized event alone.",
		}, read(func(r *Relay) float64 {
			if t := r.tracker.Load(); t != nil {
				return float64(t.PeakBytes())
			}
			return 0
		})),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outbox_relay_inflight_peak_events",
			Help: "Highest in-flight count of the current session; never above the max in-flight cap.",
		}, read(func(r *Relay) float64 {
			if t := r.tracker.Load(); t != nil {
				return float64(t.Peak())
			}
			return 0
		})),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outbox_relay_inflight_limit_events",
			Help: "The max in-flight cap (--max-in-flight).",
		}, read(func(r *Relay) float64 { return float64(r.cfg.MaxInFlight) })),
	)
}

// receivedBy counts an event received for topic.
func (m *Metrics) receivedBy(topic string) {
	m.received.Inc(topic)
}

func (m *Metrics) setPhase(p Phase) {
	for _, q := range []Phase{PhaseStarting, PhaseStreaming, PhaseStalled, PhaseStandby, PhaseReconnecting, PhaseStopped} {
		v := 0.0
		if q == p {
			v = 1
		}
		m.phase.WithLabelValues(string(q)).Set(v)
	}
}

func (m *Metrics) failures(err error) {
	var ue *UndeliverableError
	cause := "postgres"
	switch {
	case errors.Is(err, outboxrelay.ErrSlotActive):
		cause = "slot_active"
	case outboxrelay.IsConfigError(err):
		cause = "config"
	case errors.As(err, &ue):
		cause = "undeliverable"
	case errors.Is(err, errKafka):
		cause = "kafka"
	}
	m.sessionEnd.WithLabelValues(cause).Inc()
}
