package relay

import "time"

// Phase is what the relay is doing.
type Phase string

const (
	PhaseStarting     Phase = "starting"
	PhaseStreaming    Phase = "streaming"
	PhaseStalled      Phase = "stalled"
	PhaseStandby      Phase = "standby"
	PhaseReconnecting Phase = "reconnecting"
	PhaseStopped      Phase = "stopped"
)

// State is a snapshot for health endpoints.
type State struct {
	Phase  Phase
	Detail string // why, for stalled, standby, reconnecting and stopped
	Since  time.Time
}

// Ready reports whether the relay is streaming with a connected producer.
func (s State) Ready() bool { return s.Phase == PhaseStreaming }

// State returns the current phase. Safe from any goroutine.
func (r *Relay) State() State { return *r.state.Load() }

func (r *Relay) setState(p Phase, detail string) {
	if cur := r.state.Load(); cur != nil && cur.Phase == p && cur.Detail == detail {
		return
	}
	r.state.Store(&State{Phase: p, Detail: detail, Since: time.Now()})
	r.metrics.setPhase(p)
}
