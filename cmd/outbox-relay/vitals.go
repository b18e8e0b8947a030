package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/outbox-relay/outbox-relay/relay"
)

// The metric families vitals reads. Every number the status page and the
// progress line show comes from the process's own registry, so they never
// disagree with /metrics.
const (
	mAcked          = "outbox_relay_events_acked_total"
	mConfirmedLSN   = "outbox_relay_replication_confirmed_lsn"
	mReceivedLSN    = "outbox_relay_replication_received_lsn"
	mServerLSN      = "outbox_relay_slot_server_lsn"
	mSlotFlushLSN   = "outbox_relay_slot_confirmed_flush_lsn"
	mLagBytes       = "outbox_relay_slot_lag_bytes"
	mRetainedBytes  = "outbox_relay_slot_retained_wal_bytes"
	mInflightEvents = "outbox_relay_inflight_events"
	mInflightBytes  = "outbox_relay_inflight_bytes"
	mCommitToAck    = "outbox_relay_sink_commit_to_ack_seconds"
)

// vitals are the relay's numbers at one moment.
type vitals struct {
	At    time.Time
	State relay.State
	// Problem is the last stalled, reconnecting or stopped state, if any.
	Problem    relay.State
	HasProblem bool

	Acked                            float64
	ConfirmedLSN, ReceivedLSN        float64
	ServerLSN, SlotFlushLSN          float64
	LagBytes, RetainedBytes          float64
	InflightEvents, InflightBytes    float64
	latencySum, latencyCount         float64
	hasSlot, hasLatency, hasInflight bool
}

// rates are what two vitals tell apart: throughput and the mean
// commit-to-ack latency of the events acked in between (the lag in time an
// event has when it reaches Kafka); ok is false without an earlier sample.
type rates struct {
	PerSecond  float64
	LagSeconds float64
	Acked      float64 // events acked in between
	Window     time.Duration
}

func rateBetween(prev, cur vitals) (rates, bool) {
	d := cur.At.Sub(prev.At)
	if d <= 0 || prev.At.IsZero() {
		return rates{}, false
	}
	r := rates{Window: d, Acked: max(cur.Acked-prev.Acked, 0)}
	r.PerSecond = r.Acked / d.Seconds()
	if n := cur.latencyCount - prev.latencyCount; n > 0 {
		r.LagSeconds = (cur.latencySum - prev.latencySum) / n
	}
	return r, true
}

// lsn formats a position gauge the way Postgres prints it.
func lsn(v float64) string { return pglogrepl.LSN(uint64(v)).String() }

// source reads vitals from a relay and its registry.
type source struct {
	gather prometheus.Gatherer
	relay  *relay.Relay
}

// read gathers the registry once. Safe from any goroutine.
func (s source) read() (vitals, error) {
	v := vitals{At: time.Now(), State: s.relay.State()}
	v.Problem, v.HasProblem = s.relay.LastProblem()
	families, err := s.gather.Gather()
	if err != nil {
		return v, fmt.Errorf("gather metrics: %w", err)
	}
	for _, f := range families {
		sum, count := total(f)
		switch f.GetName() {
		case mAcked:
			v.Acked = sum
		case mConfirmedLSN:
			v.ConfirmedLSN = sum
		case mReceivedLSN:
			v.ReceivedLSN = sum
		case mServerLSN:
			v.ServerLSN, v.hasSlot = sum, true
		case mSlotFlushLSN:
			v.SlotFlushLSN = sum
		case mLagBytes:
			v.LagBytes = sum
		case mRetainedBytes:
			v.RetainedBytes = sum
		case mInflightEvents:
			v.InflightEvents, v.hasInflight = sum, true
		case mInflightBytes:
			v.InflightBytes = sum
		case mCommitToAck:
			v.latencySum, v.latencyCount, v.hasLatency = sum, count, true
		}
	}
	return v, nil
}

// total adds up a family's samples: a histogram's sum and count, else the
// values (the families vitals reads have one series, or a label to sum over).
func total(f *dto.MetricFamily) (sum, count float64) {
	for _, m := range f.GetMetric() {
		switch {
		case m.GetHistogram() != nil:
			sum += m.GetHistogram().GetSampleSum()
			count += float64(m.GetHistogram().GetSampleCount())
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		}
	}
	return sum, count
}

// history keeps the vitals of the last minutes for the status page's
// chart, one sample per step.
type history struct {
	src  source
	step time.Duration
	keep int

	mu      sync.Mutex
	samples []vitals
}

func newHistory(src source, step, span time.Duration) *history {
	return &history{src: src, step: step, keep: max(int(span/step), 2)}
}

// Run samples every step until ctx ends; it returns nil (a failed gather
// only leaves a hole in the chart).
func (h *history) Run(ctx context.Context) error {
	tick := time.NewTicker(h.step)
	defer tick.Stop()
	for {
		if v, err := h.src.read(); err == nil {
			h.mu.Lock()
			h.samples = append(h.samples, v)
			if len(h.samples) > h.keep {
				h.samples = append(h.samples[:0], h.samples[len(h.samples)-h.keep:]...)
			}
			h.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// series returns a copy of the samples, oldest first. Safe from any goroutine.
func (h *history) series() []vitals {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]vitals(nil), h.samples...)
}
