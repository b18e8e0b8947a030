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

// LastProblem returns the most recent stalled, reconnecting or stopped
// state with its detail (the error and, for errors that need a human, the
// fix), kept after the relay recovers so a status page can still show it;
// ok is false if there was none. Safe from any goroutine.
func (r *Relay) LastProblem() (st State, ok bool) {
	if p := r.problem.Load(); p != nil {
		return *p, true
	}
	return State{}, false
}

func (r *Relay) setState(p Phase, detail string) {
	if cur := r.state.Load(); cur != nil && cur.Phase == p && cur.Detail == detail {
		return
	}
	st := &State{Phase: p, Detail: detail, Since: time.Now()}
	r.state.Store(st)
	if detail != "" && p != PhaseStandby {
		r.problem.Store(st)
	}
	r.metrics.setPhase(p)
}
