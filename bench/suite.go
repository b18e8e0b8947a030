package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/outbox-relay/outbox-relay/internal/apachekafka"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
)

const (
	publication = "outbox_relay"
	topic       = "outbox.event.order"
	partitions  = 3
)

// suite holds what every scenario shares: one Postgres, the relay binary
// and, with -broker apache, the Apache Kafka node (see startApache).
type suite struct {
	o     options
	log   io.Writer
	pg    *pgtest.Server
	kafka *apachekafka.Cluster // nil with kfake
	// warmJIT is the CPU the broker's JIT used in the last warm-up run.
	warmJIT time.Duration
	tmp     string
	relay   relayBin // the built binary, or -relay-bin
	// baseline is -baseline-bin; its path is empty without the flag.
	baseline relayBin
	recv     string // pg_recvlogical
	schema   string
	seq      int
	relays   int // relay processes started, for their log names
}

func newSuite(ctx context.Context, o options, log io.Writer) (*suite, error) {
	s := &suite{o: o, log: log}
	var err error
	if s.tmp, err = os.MkdirTemp("", "outbox-relay-bench-*"); err != nil {
		return nil, err
	}
	if err := s.findBinaries(ctx); err != nil {
		s.Close()
		return nil, err
	}
	bin := os.Getenv(pgtest.BinDirEnv)
	if bin == "" {
		bin = pgtest.DefaultBinDir
	}
	s.recv = filepath.Join(bin, "pg_recvlogical")
	if _, err := os.Stat(s.recv); err != nil {
		s.Close()
		return nil, fmt.Errorf("pg_recvlogical not found in %s (set %s): %w", bin, pgtest.BinDirEnv, err)
	}
	s.logf("starting postgres")
	s.pg, err = pgtest.Start(ctx, pgtest.Options{Settings: map[string]string{
		// The defaults of a real server, so the WAL volume is realistic.
		"max_wal_size":              "4GB",
		"logical_decoding_work_mem": "64MB",
	}})
	if err != nil {
		s.Close()
		return nil, err
	}
	schema, err := os.ReadFile(filepath.Join(moduleRoot(), "testdata", "outbox.sql"))
	if err != nil {
		s.Close()
		return nil, err
	}
	s.schema = string(schema)
	if o.broker == brokerApache {
		s.logf("starting Apache Kafka")
		if s.kafka, err = startApache(ctx, s.logf); err != nil {
			s.Close()
			return nil, err
		}
		if err := s.warmUp(ctx, o.brokerWarmup); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// findBinaries builds the relay (or takes -relay-bin) and checks that
// -baseline-bin is a file that can be run.
func (s *suite) findBinaries(ctx context.Context) error {
	s.relay = relayBin{label: "relay", slot: "relay"}
	if s.o.relayBin != "" {
		var err error
		if s.relay.path, err = executable("-relay-bin", s.o.relayBin); err != nil {
			return err
		}
	} else {
		s.relay.path = filepath.Join(s.tmp, "outbox-relay")
		s.logf("building ./cmd/outbox-relay")
		build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", s.relay.path, "./cmd/outbox-relay")
		build.Dir = moduleRoot()
		// As make build and the Dockerfile build it: static, no libc
		// (whose pages count in the peak RSS the drain reports).
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("build relay: %w\n%s", err, out)
		}
	}
	if s.o.baselineBin != "" {
		s.baseline = relayBin{label: s.o.baselineLabel, slot: "base"}
		var err error
		if s.baseline.path, err = executable("-baseline-bin", s.o.baselineBin); err != nil {
			return err
		}
	}
	return nil
}

// executable returns the absolute path of a binary named by flagName, or
// an error saying what is wrong with it.
func executable(flagName, path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("%s %q: %w", flagName, truncate(path, 200), err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("%s %q: %w (build it first: see docs/benchmarks.md, Against the previous release)", flagName, truncate(path, 200), err)
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%s %q is not an executable file: give the path of an outbox-relay binary", flagName, truncate(path, 200))
	}
	return abs, nil
}

// relayBin is one relay binary the scenarios measure.
type relayBin struct {
	label string // the report's row label: relay or baseline
	path  string
	slot  string // the prefix of its slots' names
}

// bins are the relay binaries every relay measurement runs: the baseline
// (with -baseline-bin) and the relay, in that order.
func (s *suite) bins() []relayBin {
	if s.baseline.path == "" {
		return []relayBin{s.relay}
	}
	return []relayBin{s.baseline, s.relay}
}

// order is the order the binaries run in within one run: the baseline
// first, or with -relay-first the relay first (the whole sequence of a
// run, pg_recvlogical included, reversed).
func (s *suite) order() []relayBin {
	bins := s.bins()
	if s.o.relayFirst {
		slices.Reverse(bins)
	}
	return bins
}

// profileFor is dir for the relay and "" for the baseline: only the
// binary under work is profiled.
func (s *suite) profileFor(bin relayBin, dir string) string {
	if bin != s.relay {
		return ""
	}
	return dir
}

func (s *suite) Close() {
	if s.kafka != nil {
		s.kafka.Close()
	}
	if s.pg != nil {
		s.pg.Close()
	}
	if !s.o.keepLogs {
		os.RemoveAll(s.tmp)
	} else {
		fmt.Fprintf(s.log, "bench: relay logs kept in %s\n", s.tmp)
	}
}

func (s *suite) logf(format string, args ...any) {
	fmt.Fprintf(s.log, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// database is one scenario's database: the outbox table, the publication,
// and slots for the relay and for pg_recvlogical (one per run), all
// created before anything is written so every reader reads exactly the
// same changes.
type database struct {
	name string
	url  string
	pool *pgxpool.Pool
	runs int
}

// slot is run's slot of a binary (relayBin.slot) or of pg_recvlogical
// ("recv").
func (db *database) slot(reader string, run int) string {
	return fmt.Sprintf("%s_%d_%s", reader, run, db.name)
}

func (db *database) recvSlot(run int) string { return db.slot("recv", run) }

func (s *suite) newDatabase(ctx context.Context, scenario string, runs int) (*database, error) {
	s.seq++
	name := fmt.Sprintf("bench_%d_%s", s.seq, strings.ToLower(strings.ReplaceAll(scenario, "-", "_")))
	url, err := s.pg.CreateDatabase(ctx, name)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = int32(s.o.loadConns + 2)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	db := &database{name: name, url: url, pool: pool, runs: runs}
	stmts := []string{
		s.schema,
		fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE public.outbox WITH (publish = 'insert')", publication),
		loadProcedure,
	}
	for i := range runs {
		stmts = append(stmts, fmt.Sprintf("SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", db.recvSlot(i)))
		for _, bin := range s.bins() {
			stmts = append(stmts, fmt.Sprintf("SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", db.slot(bin.slot, i)))
		}
	}
	for _, q := range stmts {
		if _, err := pool.Exec(ctx, q); err != nil {
			pool.Close()
			return nil, fmt.Errorf("prepare database: %w", err)
		}
	}
	return db, nil
}

// Close drops the slots (so the server stops retaining WAL for them) and
// the database.
func (db *database) Close(s *suite) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = db.pool.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
		WHERE database = current_database() AND NOT active`)
	db.pool.Close()
	_ = s.pg.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db.name}.Sanitize()+" WITH (FORCE)")
}

// loadProcedure commits every perTx rows, server-side, so writing a backlog
// costs no round trip per transaction. Every row of a run shares the pad:
// TOAST compresses values one at a time, so sharing does not make the WAL
// smaller, and random hex does not compress.
const loadProcedure = `
CREATE PROCEDURE bench_load(n int, per_tx int, pad text, first int, aggs int) LANGUAGE plpgsql AS $$
DECLARE i int := 0;
BEGIN
  WHILE i < n LOOP
    INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
    SELECT 'order', 'order-' || ((first + i + g) % aggs), 'order.created',
           jsonb_build_object('seq', first + i + g, 'pad', pad)
    FROM generate_series(1, least(per_tx, n - i)) g;
    i := i + per_tx;
    COMMIT;
  END LOOP;
END $$`

// pad returns random hex that makes {"pad": "...", "seq": N} about size
// bytes of jsonb text.
func pad(size int) string {
	n := max(1, size-len(`{"pad": "", "seq": 1234567}`))
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// backlog is what a load wrote.
type backlog struct {
	events       int
	payloadBytes float64 // average jsonb text length
	end          pglogrepl.LSN
	loadTime     time.Duration
}

// backlogAggregates is how many aggregate ids a backlog's events cycle
// through, so the relay's partitioning by aggregate id spreads them over
// every partition (the topics scenario sets its own count).
const backlogAggregates = 1000

// load writes n events in transactions of perTx rows over the suite's
// load connections, their aggregate ids cycling through aggs values
// (order-0, order-1, ...), then waits until the WAL is flushed so every
// reader starts with everything on disk.
func (s *suite) load(ctx context.Context, db *database, n, perTx, size, aggs int) (backlog, error) {
	started := time.Now()
	p := pad(size)
	conns := s.o.loadConns
	if perTx >= n {
		conns = 1 // one transaction
	}
	g, gctx := errgroup.WithContext(ctx)
	var mu sync.Mutex
	next := 0
	chunk := max(perTx, (n/conns/perTx)*perTx)
	for c := 0; c < conns; c++ {
		g.Go(func() error {
			for {
				mu.Lock()
				first, count := next, min(chunk, n-next)
				next += count
				mu.Unlock()
				if count <= 0 {
					return nil
				}
				if perTx >= count {
					// A single statement is a single transaction.
					_, err := db.pool.Exec(gctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
						SELECT 'order', 'order-' || ((g + $2) % $4::int), 'order.created', jsonb_build_object('seq', g + $2, 'pad', $3::text)
						FROM generate_series(1, $1::int) g`, count, first, p, aggs)
					if err != nil {
						return fmt.Errorf("insert: %w", err)
					}
					continue
				}
				if _, err := db.pool.Exec(gctx, "CALL bench_load($1, $2, $3, $4, $5)", count, perTx, p, first, aggs); err != nil {
					return fmt.Errorf("call bench_load: %w", err)
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return backlog{}, err
	}
	b := backlog{events: n, loadTime: time.Since(started)}
	var end string
	if err := db.pool.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&end); err != nil {
		return b, err
	}
	var err error
	if b.end, err = pglogrepl.ParseLSN(end); err != nil {
		return b, err
	}
	if err := db.pool.QueryRow(ctx, "SELECT avg(octet_length(payload::text)) FROM (SELECT payload FROM outbox LIMIT 1000) s").Scan(&b.payloadBytes); err != nil {
		return b, err
	}
	for {
		var flushed bool
		if err := db.pool.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn", end).Scan(&flushed); err != nil {
			return b, err
		}
		if flushed {
			break
		}
		select {
		case <-ctx.Done():
			return b, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	// Settle: let the checkpointer and autovacuum triggered by the load
	// run before the timed readers, not during them.
	if _, err := db.pool.Exec(ctx, "CHECKPOINT"); err != nil {
		return b, err
	}
	return b, nil
}
