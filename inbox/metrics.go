package inbox

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the inbox's series (docs/metrics.md). Labels are bounded:
// topics the group consumes, partitions, outcomes.
type metrics struct {
	processed    *prometheus.CounterVec
	skipped      *prometheus.CounterVec
	retries      *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	dbRetries    prometheus.Counter
	latency      *prometheus.HistogramVec
	lag          *prometheus.GaugeVec
	pruned       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_relay_inbox_processed_total", Help: "Records whose handler committed."}, []string{"topic"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_relay_inbox_skipped_duplicates_total", Help: "Records skipped because their event id was already applied."}, []string{"topic"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_relay_inbox_retries_total", Help: "Handler attempts retried after a retryable error."}, []string{"topic"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_relay_inbox_dead_lettered_total", Help: "Records copied to the dead-letter topic, by cause."}, []string{"topic", "cause"}),
		dbRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_inbox_database_retries_total", Help: "Attempts retried after the inbox's own database work failed."}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "outbox_relay_inbox_handler_duration_seconds", Help: "Time from begin to commit of a record's transaction.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"topic"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "outbox_relay_inbox_lag_records", Help: "Records after the last handled one, per claimed partition."}, []string{"topic", "partition"}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_inbox_pruned_ids_total", Help: "Inbox ids deleted for being older than the retention."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.processed, m.skipped, m.retries, m.deadLettered, m.dbRetries, m.latency, m.lag, m.pruned} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register inbox metrics (one Consumer per registry): %w", err)
		}
	}
	return m, nil
}
