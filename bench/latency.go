package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

// warmup is left out of the latency figures: the first records pay for
// the producer's first metadata request and the consumer's first fetch.
const warmup = time.Second

type latencyResult struct {
	label           string // the binary: relay or baseline
	rate, rows      int
	duration        time.Duration
	written, seen   int
	p50, p95, p99   time.Duration
	maxLat          time.Duration
	relayCPU        time.Duration
	relayRSS        int64
	benchCPU        time.Duration // this process: the writer, the consumer (and kfake)
	brokerCPU       time.Duration // the broker's process while the writer ran (see broker.cpu)
	walsenderCPU    time.Duration // the relay's walsender, over its life
	writeLagAtClose time.Duration
	load            string
	// relayP50/relayP99 bound the relay's commit-to-ack time (histogram
	// bucket bounds, seconds); relayHist is false when the binary exports
	// no such histogram.
	relayP50, relayP99 float64
	relayHist          bool
	// toCommit and fromCommit are p50, p99 and max of the two parts of
	// each latency (see latencyConsumer.split).
	toCommit, fromCommit [3]time.Duration
}

// latencyScenario writes at rate events/s for d while bin runs, each row's
// payload carrying its insert time, and a consumer measures how long after
// the insert each record became readable. With profileDir the relay writes
// its CPU profile there.
func (s *suite) latencyScenario(ctx context.Context, bin relayBin, rate int, d time.Duration, profileDir string) (latencyResult, error) {
	res := latencyResult{label: bin.label, rate: rate, rows: s.o.latencyRows, duration: d}
	broker, err := s.freshBroker(ctx)
	if err != nil {
		return res, err
	}
	defer broker.Close()
	db, err := s.newDatabase(ctx, fmt.Sprintf("latency-%d", rate), 1)
	if err != nil {
		return res, err
	}
	defer db.Close(s)
	p, err := s.startLatencyRelay(ctx, bin, db, broker.Addrs(), profileFile(profileDir, rate, s.o.rate))
	if err != nil {
		return res, err
	}
	defer p.stop()
	c, err := startLatencyConsumer(ctx, broker.Addrs())
	if err != nil {
		return res, err
	}
	defer c.stop()

	bench0 := selfCPU()
	broker0, err := broker.cpu()
	if err != nil {
		return res, err
	}
	if err := s.writeAtRate(ctx, db, &res); err != nil {
		return res, err
	}
	if err := c.waitFor(ctx, res.written); err != nil {
		return res, err
	}
	res.benchCPU = selfCPU() - bench0
	if res.brokerCPU, err = broker.cpu(); err != nil {
		return res, err
	}
	res.brokerCPU -= broker0
	if err := res.sampleRelay(ctx, db, db.slot(bin.slot, 0), p); err != nil {
		return res, err
	}
	lats, seen := c.stop()
	res.seen = seen
	res.toCommit, res.fromCommit = c.splits()
	if len(lats) == 0 {
		return res, fmt.Errorf("no latency samples")
	}
	res.p50, res.p95, res.p99, res.maxLat = percentiles(lats)
	return res, nil
}

// sampleRelay records the relay's CPU and peak RSS, its walsender's CPU,
// the load average and the relay's own commit-to-ack quantiles, once every
// event has been consumed.
func (res *latencyResult) sampleRelay(ctx context.Context, db *database, slot string, p *relayProc) error {
	var err error
	if res.relayCPU, err = procCPU(p.pid()); err != nil {
		return err
	}
	if res.relayRSS, err = procPeakRSS(p.pid()); err != nil {
		return err
	}
	ws := &walsender{pool: db.pool, slot: slot}
	ws.sample(ctx)
	res.walsenderCPU = ws.cpu
	res.load = loadAvg()
	if q, err := relayQuantiles(p.metrics, .5, .99); err == nil {
		res.relayP50, res.relayP99, res.relayHist = q[0], q[1], true
	}
	return nil
}

// profileFile is where a latency run at rate writes the relay's CPU
// profile: dir/relay-latency.pprof at -rate, dir/relay-latency-RATE.pprof
// at any other rate, so several rates keep their own; "" without dir.
func profileFile(dir string, rate, defaultRate int) string {
	if dir == "" {
		return ""
	}
	if rate == defaultRate {
		return filepath.Join(dir, "relay-latency.pprof")
	}
	return filepath.Join(dir, fmt.Sprintf("relay-latency-%d.pprof", rate))
}

// startLatencyRelay starts bin on the scenario's slot (profiled into
// profile when it is set) and waits until it is ready, so the writer's
// first rows do not measure the relay's start-up.
func (s *suite) startLatencyRelay(ctx context.Context, bin relayBin, db *database, brokers []string, profile string) (*relayProc, error) {
	if profile != "" {
		if err := os.MkdirAll(filepath.Dir(profile), 0o755); err != nil {
			return nil, err
		}
		var err error
		if profile, err = filepath.Abs(profile); err != nil {
			return nil, err
		}
	}
	p, err := s.startRelay(ctx, bin, db, db.slot(bin.slot, 0), brokers, profile)
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, p); err != nil {
		_ = p.stop()
		return nil, err
	}
	return p, nil
}

// latencyConsumer reads the topic from the start and records, for each
// record carrying an insert time, how long ago that insert was. Its
// goroutine runs until stop.
type latencyConsumer struct {
	cl        *kgo.Client
	cancel    context.CancelFunc
	consumed  chan struct{} // closed when the goroutine has returned
	closeOnce sync.Once

	mu   sync.Mutex
	lats []time.Duration
	// split divides each latency at the record's timestamp, the Postgres
	// commit time (millisecond precision): insert -> commit is the writer's
	// and Postgres' part, commit -> readable the relay's and the broker's.
	toCommit, fromCommit []time.Duration
	seen                 int
}

func startLatencyConsumer(ctx context.Context, brokers []string) (*latencyConsumer, error) {
	// read_committed, as --exactly-once consumers must read: without
	// transactions it sees each record as soon as read_uncommitted does
	// (the last stable offset is the high watermark).
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ClientID("bench-latency"),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(time.Second), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	c := &latencyConsumer{cl: cl, cancel: cancel, consumed: make(chan struct{})}
	go c.run(cctx)
	return c, nil
}

func (c *latencyConsumer) run(ctx context.Context) {
	defer close(c.consumed)
	for ctx.Err() == nil {
		fs := c.cl.PollFetches(ctx)
		now := time.Now()
		c.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			c.seen++
			if ts, ok := insertTime(r.Value); ok {
				c.lats = append(c.lats, now.Sub(ts))
				c.toCommit = append(c.toCommit, r.Timestamp.Sub(ts))
				c.fromCommit = append(c.fromCommit, now.Sub(r.Timestamp))
			}
		})
		c.mu.Unlock()
	}
}

// waitFor waits until the consumer has seen want records, for at most 30 s.
func (c *latencyConsumer) waitFor(ctx context.Context, want int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.mu.Lock()
		n := c.seen
		c.mu.Unlock()
		if n >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("consumer saw %d of %d events 30s after the writer stopped", n, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// stop ends the goroutine, closes the client and returns the sorted
// latencies and the records seen. It may be called again (a deferred call
// after the scenario's own).
func (c *latencyConsumer) stop() ([]time.Duration, int) {
	c.cancel()
	<-c.consumed
	c.closeOnce.Do(c.cl.Close)
	c.mu.Lock()
	defer c.mu.Unlock()
	slices.Sort(c.lats)
	return c.lats, c.seen
}

// splits returns p50, p99 and max of insert -> commit and of commit ->
// readable; call it after stop.
func (c *latencyConsumer) splits() (toCommit, fromCommit [3]time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := func(ds []time.Duration) (out [3]time.Duration) {
		if len(ds) == 0 {
			return out
		}
		slices.Sort(ds)
		p50, _, p99, m := percentiles(ds)
		return [3]time.Duration{p50, p99, m}
	}
	return q(c.toCommit), q(c.fromCommit)
}

// percentiles returns p50, p95, p99 and the maximum of sorted latencies.
func percentiles(lats []time.Duration) (p50, p95, p99, maxLat time.Duration) {
	pct := func(q float64) time.Duration { return lats[min(len(lats)-1, int(q*float64(len(lats))))] }
	return pct(.50), pct(.95), pct(.99), lats[len(lats)-1]
}

// writeAtRate inserts res.rows-row transactions at res.rate events/s for
// res.duration, each payload carrying its insert time (0 during the
// warm-up), and records what it wrote and how far behind schedule it ended.
func (s *suite) writeAtRate(ctx context.Context, db *database, res *latencyResult) error {
	// The writer commits synchronously, as an application would: with
	// pgtest's synchronous_commit=off a commit could wait up to
	// wal_writer_delay before walsenders see it.
	cfg, err := pgx.ParseConfig(db.url)
	if err != nil {
		return err
	}
	cfg.RuntimeParams["synchronous_commit"] = "on"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	padding := pad(s.o.payload - len(`"ts": 1700000000000000000, `))
	interval := time.Duration(float64(time.Second) * float64(res.rows) / float64(res.rate))
	s.logf("latency: %s: writing %d events/s in %d-row transactions for %s", res.label, res.rate, res.rows, res.duration)
	start := time.Now()
	next := start
	for time.Since(start) < res.duration {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		ts := time.Now()
		measured := ts.Sub(start) >= warmup
		_, err := conn.Exec(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
			SELECT 'order', 'order-' || ((g + $2) % 1000), 'order.created',
			       jsonb_build_object('ts', $3::bigint, 'seq', g + $2, 'pad', $4::text)
			FROM generate_series(1, $1::int) g`, res.rows, res.written, tsValue(ts, measured), padding)
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		res.written += res.rows
		next = next.Add(interval)
	}
	res.writeLagAtClose = time.Since(next)
	return nil
}

// tsValue is the insert time in Unix nanoseconds, or 0 for warm-up rows.
func tsValue(t time.Time, measured bool) int64 {
	if !measured {
		return 0
	}
	return t.UnixNano()
}

// insertTime reads "ts" from the jsonb text; jsonb puts it first (shorter
// keys sort first).
func insertTime(v []byte) (time.Time, bool) {
	const key = `"ts": `
	i := bytes.Index(v, []byte(key))
	if i < 0 {
		return time.Time{}, false
	}
	rest := v[i+len(key):]
	j := bytes.IndexAny(rest, ",}")
	if j < 0 {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	if err != nil || ns == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

func waitReady(ctx context.Context, p *relayProc) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + p.metrics + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return fmt.Errorf("relay exited (%v); log: %s", p.err, p.logTail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relay not ready after 30s; log: %s", p.logTail())
		}
	}
}

// relayQuantiles reads the relay's commit-to-ack histogram
// (outbox_relay_sink_commit_to_ack_seconds) and returns the bucket bound
// at or above each quantile: the relay's share of the latency, from the
// Postgres commit to the broker's ack, as the relay itself saw it.
func relayQuantiles(metricsAddr string, qs ...float64) ([]float64, error) {
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	type bucket struct{ le, count float64 }
	var bs []bucket
	const prefix = `outbox_relay_sink_commit_to_ack_seconds_bucket{le="`
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		le, count, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		l, err1 := strconv.ParseFloat(le, 64)
		c, err2 := strconv.ParseFloat(strings.TrimSpace(count), 64)
		if err1 != nil || err2 != nil {
			continue
		}
		bs = append(bs, bucket{l, c})
	}
	if len(bs) == 0 || bs[len(bs)-1].count == 0 {
		return nil, fmt.Errorf("no commit-to-ack samples in the relay's /metrics")
	}
	total := bs[len(bs)-1].count
	out := make([]float64, len(qs))
	for i, q := range qs {
		for _, b := range bs {
			if b.count >= q*total {
				out[i] = b.le
				break
			}
		}
	}
	return out, nil
}
