package main

import (
	"context"
	"time"

	"github.com/rs/zerolog"
)

// progress logs one line every interval, so an operator who reads only
// the log sees the relay working: events delivered (in total and per
// second over the interval), the confirmed position and the lag.
type progress struct {
	src      source
	interval time.Duration
	log      zerolog.Logger
}

// Run logs until ctx ends and returns nil.
func (p progress) Run(ctx context.Context) error {
	prev, _ := p.src.read()
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cur, err := p.src.read()
		if err != nil {
			p.log.Warn().Err(err).Msg("progress: read metrics")
			continue
		}
		p.line(prev, cur)
		prev = cur
	}
}

func (p progress) line(prev, cur vitals) {
	r, _ := rateBetween(prev, cur)
	ev := p.log.Info().
		Str("phase", string(cur.State.Phase)).
		Int64("events_delivered", int64(cur.Acked)).
		Int64("events_delivered_interval", int64(r.Acked)).
		Float64("events_per_second", round2(r.PerSecond)).
		Str("confirmed_lsn", lsn(cur.ConfirmedLSN)).
		Int64("inflight_events", int64(cur.InflightEvents))
	if cur.hasSlot {
		ev = ev.Int64("lag_bytes", int64(cur.LagBytes)).Str("server_lsn", lsn(cur.ServerLSN))
	}
	if r.Acked > 0 {
		ev = ev.Float64("lag_seconds", round2(r.LagSeconds))
	}
	ev.Msg("progress")
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }
