package main

import (
	"context"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
)

// result is one backlog scenario: both readers on the same backlog, the
// median run of each.
type result struct {
	name    string
	runs    int
	backlog backlog
	recv    readerRun
	relay   readerRun
	load    string // 1-minute load average at the end
}

// backlogScenario writes n events (perTx rows per transaction) while no
// reader runs, then drains it --runs times with pg_recvlogical and with
// the relay, alternating, each from its own slot (and the relay into a
// fresh broker: see freshBroker). pg_recvlogical goes first in each pair
// unless --relay-first.
func (s *suite) backlogScenario(ctx context.Context, name string, n, perTx, size int, profileDir string) (result, error) {
	res := result{name: name, runs: s.o.runs}
	db, err := s.newDatabase(ctx, name, s.o.runs)
	if err != nil {
		return res, err
	}
	defer db.Close(s)

	s.logf("%s: writing %d events (%d per transaction, %d B payloads)", name, n, perTx, size)
	if res.backlog, err = s.load(ctx, db, n, perTx, size); err != nil {
		return res, err
	}
	s.logf("%s: written in %s; end LSN %s", name, res.backlog.loadTime.Round(1e6), res.backlog.end)

	var recvs, relays []readerRun
	for i := range s.o.runs {
		recv := func() error {
			r, err := s.runRecvlogical(ctx, db, db.recvSlot(i), res.backlog.end)
			if err != nil {
				return err
			}
			s.logf("%s: pg_recvlogical %s", name, r.elapsed.Round(1e6))
			recvs = append(recvs, r)
			return nil
		}
		if !s.o.relayFirst {
			if err := recv(); err != nil {
				return res, err
			}
		}
		profile := ""
		if i == 0 {
			profile = profileDir
		}
		r, err := s.drainRelay(ctx, db, db.relaySlot(i), n, profile)
		if err != nil {
			return res, err
		}
		s.logf("%s: relay %s", name, r.elapsed.Round(1e6))
		relays = append(relays, r)
		if s.o.relayFirst {
			if err := recv(); err != nil {
				return res, err
			}
		}
	}
	res.recv, res.relay = median(recvs), median(relays)
	res.load = loadAvg()
	s.logf("%s: median relay %s, pg_recvlogical %s (%.2fx); load average %s", name, res.relay.elapsed.Round(1e6), res.recv.elapsed.Round(1e6), res.ratio(), res.load)
	return res, nil
}

// drainRelay runs the relay on slot into a fresh broker (an empty topic)
// until all n events are acked; with profileDir it writes CPU profiles of
// the relay and of this process (with kfake: the broker) there.
func (s *suite) drainRelay(ctx context.Context, db *database, slot string, n int, profileDir string) (readerRun, error) {
	broker, err := s.freshBroker(ctx)
	if err != nil {
		return readerRun{}, err
	}
	defer broker.Close()
	var relayProfile string
	if profileDir != "" {
		if err := os.MkdirAll(profileDir, 0o755); err != nil {
			return readerRun{}, err
		}
		relayProfile, _ = filepath.Abs(filepath.Join(profileDir, "relay.pprof"))
		f, err := os.Create(filepath.Join(profileDir, "bench.pprof"))
		if err != nil {
			return readerRun{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return readerRun{}, err
		}
		defer pprof.StopCPUProfile()
	}
	return s.runRelay(ctx, db, slot, broker, int64(n), relayProfile)
}

// median is the run with the median elapsed time (the lower middle one
// for an even count); its other figures come from the same run.
func median(runs []readerRun) readerRun {
	runs = slices.Clone(runs)
	slices.SortFunc(runs, func(a, b readerRun) int { return int(a.elapsed - b.elapsed) })
	return runs[(len(runs)-1)/2]
}

func (r result) rate(run readerRun) float64 {
	return float64(r.backlog.events) / run.elapsed.Seconds()
}

func (r result) ratio() float64 { return r.recv.elapsed.Seconds() / r.relay.elapsed.Seconds() }
