package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
)

// result is one backlog scenario: every reader on the same backlog, the
// median run of each.
type result struct {
	name    string
	runs    int
	backlog backlog
	recv    readerRun
	relays  []binRun // one per binary, in suite.bins order
	load    string   // 1-minute load average at the end
}

// binRun is one binary's median run.
type binRun struct {
	label string
	run   readerRun
}

// backlogScenario writes n events (perTx rows per transaction) while no
// reader runs, then drains it --runs times with pg_recvlogical and with
// each relay binary, one after the other, each from its own slot (and each
// relay into a fresh broker: see freshBroker). Each run goes
// pg_recvlogical, the baseline, the relay, or the reverse with
// --relay-first.
func (s *suite) backlogScenario(ctx context.Context, name string, n, perTx, size int, profileDir string) (result, error) {
	res := result{name: name, runs: s.o.runs}
	db, err := s.newDatabase(ctx, name, s.o.runs)
	if err != nil {
		return res, err
	}
	defer db.Close(s)

	s.logf("%s: writing %d events (%d per transaction, %d B payloads)", name, n, perTx, size)
	if res.backlog, err = s.load(ctx, db, n, perTx, size, backlogAggregates); err != nil {
		return res, err
	}
	s.logf("%s: written in %s; end LSN %s", name, res.backlog.loadTime.Round(1e6), res.backlog.end)

	var recvs []readerRun
	runs := make(map[relayBin][]readerRun)
	for i := range s.o.runs {
		steps := []func() error{func() error {
			r, err := s.runRecvlogical(ctx, db, db.recvSlot(i), res.backlog.end)
			if err != nil {
				return err
			}
			s.logf("%s: pg_recvlogical %s", name, r.elapsed.Round(1e6))
			recvs = append(recvs, r)
			return nil
		}}
		for _, bin := range s.bins() {
			steps = append(steps, func() error {
				profile := ""
				if i == 0 {
					profile = s.profileFor(bin, profileDir)
				}
				r, err := s.drainRelay(ctx, bin, db, db.slot(bin.slot, i), n, profile)
				if err != nil {
					return fmt.Errorf("%s: %w", bin.label, err)
				}
				s.logf("%s: %s %s", name, bin.label, r.elapsed.Round(1e6))
				runs[bin] = append(runs[bin], r)
				return nil
			})
		}
		if s.o.relayFirst {
			slices.Reverse(steps)
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return res, err
			}
		}
	}
	res.recv = median(recvs)
	for _, bin := range s.bins() {
		m := median(runs[bin])
		res.relays = append(res.relays, binRun{bin.label, m})
		s.logf("%s: median %s %s, pg_recvlogical %s (%.2fx)", name, bin.label, m.elapsed.Round(1e6), res.recv.elapsed.Round(1e6), res.ratio(m))
	}
	res.load = loadAvg()
	s.logf("%s: load average %s", name, res.load)
	return res, nil
}

// drainRelay runs the relay on slot into a fresh broker (an empty topic)
// until all n events are acked; with profileDir it writes CPU profiles of
// the relay and of this process (with kfake: the broker) there.
func (s *suite) drainRelay(ctx context.Context, bin relayBin, db *database, slot string, n int, profileDir string) (readerRun, error) {
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
	c, err := newCounter(broker.Addrs(), s.committed())
	if err != nil {
		return readerRun{}, err
	}
	defer c.Close()
	return s.runRelay(ctx, relayRun{bin: bin, db: db, slot: slot, broker: broker, counter: c,
		poll: pollInterval, want: int64(n), profile: relayProfile})
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

// ratio is pg_recvlogical's time / run's: above 1 the relay was faster.
func (r result) ratio(run readerRun) float64 { return r.recv.elapsed.Seconds() / run.elapsed.Seconds() }
