package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// pollInterval is how often completion is checked; it bounds the timing
// error of each run.
const pollInterval = 5 * time.Millisecond

// readerRun is one reader's cost on one backlog.
type readerRun struct {
	elapsed   time.Duration
	cpu       time.Duration // the reader process
	peakRSS   int64
	walsender time.Duration // the Postgres backend decoding for it
	brokerCPU time.Duration // the broker's process during the run (see broker.cpu)
	series    metricSeries  // the relay's /metrics at the end (topics scenario)
}

// runRecvlogical times pg_recvlogical from start until it has received the
// backlog's end LSN (--endpos makes it exit there).
func (s *suite) runRecvlogical(ctx context.Context, db *database, slot string, end pglogrepl.LSN) (readerRun, error) {
	var r readerRun
	cmd := exec.CommandContext(ctx, s.recv, "-d", db.url, "--slot", slot, "--start", "--no-loop",
		"-o", "proto_version=1", "-o", "publication_names="+publication,
		"--endpos", end.String(), "-f", "/dev/null")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	ws := &walsender{pool: db.pool, slot: slot}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return r, fmt.Errorf("start pg_recvlogical: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			r.elapsed = time.Since(started)
			if err != nil {
				return r, fmt.Errorf("pg_recvlogical: %w: %s", err, stderr.String())
			}
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				r.peakRSS = ru.Maxrss << 10
			}
			r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			r.walsender = ws.cpu
			return r, nil
		case <-tick.C:
			ws.sample(ctx)
		}
	}
}

// relayProc is the relay binary running as its own process, so its RSS
// and CPU are its own.
type relayProc struct {
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{} // closed when the process has exited
	err     error         // its exit status, once done is closed
	logPath string
	metrics string // host:port of /metrics and /readyz
}

// startRelay starts bin on slot; extra flags come after -relay-args, so a
// scenario's own (the topics scenario's --topic) win.
func (s *suite) startRelay(ctx context.Context, bin relayBin, db *database, slot string, brokers []string, profile string, extra ...string) (*relayProc, error) {
	metrics, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"run",
		"--pg-url", db.url, "--kafka-brokers", strings.Join(brokers, ","),
		"--slot", slot, "--publication", publication,
		"--metrics-addr", metrics, "--log-level", "info",
	}
	args = append(args, s.o.relayArgs...)
	args = append(args, extra...)
	// Numbered: the incidents scenario starts a relay again on the same
	// slot after a kill, and the killed one's log is kept.
	s.relays++
	p := &relayProc{done: make(chan struct{}), logPath: filepath.Join(s.tmp, fmt.Sprintf("%s.%d.relay.log", slot, s.relays)), metrics: metrics}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin.path, args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.Env = os.Environ()
	if profile != "" {
		p.cmd.Env = append(p.cmd.Env, "OUTBOX_RELAY_CPUPROFILE="+profile)
	}
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start relay: %w", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *relayProc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM (a graceful shutdown: drain acks, final status
// update) and waits.
func (p *relayProc) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("relay exited with %w; log: %s", p.err, p.logTail())
		}
		return nil
	case <-time.After(45 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("relay did not stop within 45s of SIGTERM; log: %s", p.logTail())
	}
}

func (p *relayProc) logTail() string {
	raw, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	return strings.Join(lines[max(0, len(lines)-10):], "\n")
}

// counter reads the topic's high watermarks: the records the broker has
// acked, whoever produced them. It keeps one client across polls. With
// transactions (committed) it reads the last stable offsets instead, what
// a read_committed consumer can reach; both then count each transaction's
// commit markers too (one per partition a transaction wrote), so a drain
// measured this way ends up to that many records early.
type counter struct {
	cl        *kgo.Client
	committed bool
}

func newCounter(brokers []string, committed bool) (*counter, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ClientID("bench-counter"))
	if err != nil {
		return nil, err
	}
	return &counter{cl: cl, committed: committed}, nil
}

func (c *counter) Close() { c.cl.Close() }

func (c *counter) count(ctx context.Context) (int64, error) {
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	if c.committed {
		req.IsolationLevel = 1
	}
	t := kmsg.NewListOffsetsRequestTopic()
	t.Topic = topic
	for p := int32(0); p < partitions; p++ {
		lp := kmsg.NewListOffsetsRequestTopicPartition()
		lp.Partition = p
		lp.Timestamp = -1
		t.Partitions = append(t.Partitions, lp)
	}
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, c.cl)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return 0, fmt.Errorf("list offsets %s[%d]: %w", t.Topic, p.Partition, err)
			}
			n += p.Offset
		}
	}
	return n, nil
}

// ackCounter counts the records the broker holds for a relay run; p is
// the relay producing them.
type ackCounter interface {
	acked(ctx context.Context, p *relayProc) (int64, error)
}

func (c *counter) acked(ctx context.Context, _ *relayProc) (int64, error) { return c.count(ctx) }

// committed says whether counters read last stable offsets: with
// --exactly-once, what a read_committed consumer can reach.
func (s *suite) committed() bool { return slices.Contains(s.o.relayArgs, "--exactly-once") }

// relayRun is one timed relay run.
type relayRun struct {
	bin     relayBin
	db      *database
	slot    string
	broker  broker
	counter ackCounter
	poll    time.Duration // how often counter is read: the timing error
	// pollShare and pollCost, if set, stretch the poll to that share of
	// the time since the start, or to pollCost times as long as the last
	// count took, when either is longer: a dear counter (thousands of
	// partitions) then takes at most about 1/pollCost of a core, and
	// the timing error stays within the larger of the three.
	pollShare float64
	pollCost  int
	want      int64
	profile   string
	args      []string // extra flags for outbox-relay run
	// atEnd, if set, runs once every event is acked, while the relay
	// still runs.
	atEnd func(*relayProc) error
}

// runRelay times the relay from process start until the broker holds
// rr.want records, and samples its CPU and peak RSS at that moment.
func (s *suite) runRelay(ctx context.Context, rr relayRun) (readerRun, error) {
	var r readerRun
	ws := &walsender{pool: rr.db.pool, slot: rr.slot}
	broker0, err := rr.broker.cpu()
	if err != nil {
		return r, err
	}
	p, err := s.startRelay(ctx, rr.bin, rr.db, rr.slot, rr.broker.Addrs(), rr.profile, rr.args...)
	if err != nil {
		return r, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = p.stop()
		}
	}()
	tick := time.NewTimer(rr.poll)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-p.done:
			return r, fmt.Errorf("relay exited early (%v); log: %s", p.err, p.logTail())
		case <-tick.C:
		}
		counted := time.Now()
		n, err := rr.counter.acked(ctx, p)
		tick.Reset(max(rr.poll, time.Duration(rr.pollShare*float64(time.Since(p.started))), time.Duration(rr.pollCost)*time.Since(counted)))
		if err != nil && !errors.Is(err, kerr.UnknownTopicOrPartition) {
			return r, err
		}
		if n >= rr.want {
			r.elapsed = time.Since(p.started)
			if err := r.sample(rr.broker, broker0, p); err != nil {
				return r, err
			}
			ws.sample(ctx)
			r.walsender = ws.cpu
			if n > rr.want && !s.committed() {
				return r, fmt.Errorf("broker holds %d records, want %d: duplicates in a clean run", n, rr.want)
			}
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("relay delivered %d of %d events in 10 minutes; log: %s", n, rr.want, p.logTail())
		}
		ws.sample(ctx)
	}
	if rr.atEnd != nil {
		if err := rr.atEnd(p); err != nil {
			return r, err
		}
	}
	stopped = true
	return r, p.stop()
}

// sample records the broker's CPU since broker0 and the relay's CPU and
// peak RSS so far.
func (r *readerRun) sample(b broker, broker0 time.Duration, p *relayProc) error {
	var err error
	if r.brokerCPU, err = b.cpu(); err != nil {
		return err
	}
	r.brokerCPU -= broker0
	if r.cpu, err = procCPU(p.pid()); err != nil {
		return err
	}
	r.peakRSS, err = procPeakRSS(p.pid())
	return err
}
