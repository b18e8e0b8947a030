// Package relaytest is the fixture for integration tests: a database with
// the outbox table on a throwaway Postgres, a broker (kfake, or Apache Kafka
// under `make test-kafka`: see kafkatest.New), helpers to write events in
// transactions, to read the slot, and to run a relay in-process with
// test-friendly timings.
package relaytest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
	"github.com/outbox-relay/outbox-relay/internal/wire"
	"github.com/outbox-relay/outbox-relay/relay"
)

// OutboxSQL returns testdata/outbox.sql, the default table.
func OutboxSQL(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "testdata", "outbox.sql"))
	if err != nil {
		t.Fatalf("read testdata/outbox.sql: %v", err)
	}
	return string(b)
}

var dbSeq atomic.Int64

// Env is one test's database and broker.
type Env struct {
	T   testing.TB
	PG  *pgtest.Server
	URL string // the test database
	// Slot is this env's slot name: slots are cluster-wide, so tests
	// sharing a server must not share one.
	Slot  string
	Pool  *pgxpool.Pool
	Kafka *kafkatest.Broker
}

// NewEnv creates a fresh database with the outbox table on pg and a broker.
func NewEnv(t testing.TB, pg *pgtest.Server, kopts kafkatest.Options) *Env {
	t.Helper()
	return NewEnvWith(t, pg, kopts, OutboxSQL(t))
}

// NewEnvWith is NewEnv with schemaSQL run in the fresh database instead of
// testdata/outbox.sql: a differently shaped outbox table (partitioned,
// renamed, other column types), its schema, and anything else the test
// needs before the relay starts. schemaSQL may hold several statements.
// Insert writes into public.outbox and so only fits the default table.
func NewEnvWith(t testing.TB, pg *pgtest.Server, kopts kafkatest.Options, schemaSQL string) *Env {
	t.Helper()
	e := newDatabase(t, pg, schemaSQL)
	e.Kafka = kafkatest.New(t, kopts)
	return e
}

// Event is a row to insert. Seq is written into the payload so order can
// be checked downstream.
type Event struct {
	AggregateType, AggregateID, EventType string
	Seq                                   int
	Headers                               map[string]string
}

// Inserted is what Insert learned about a row.
type Inserted struct {
	Event
	ID      string
	Payload string // as Postgres renders the jsonb
}

// Insert writes events in one transaction and returns them with their ids
// and a position at or past its commit's end (CurrentLSN after it).
func (e *Env) Insert(ctx context.Context, evs []Event) ([]Inserted, outboxrelay.LSN) {
	e.T.Helper()
	out := make([]Inserted, 0, len(evs))
	err := pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error {
		for _, ev := range evs {
			var hdr []byte
			if ev.Headers != nil {
				hdr, _ = json.Marshal(ev.Headers)
			}
			payload := fmt.Sprintf(`{"seq": %d, "aggregate": %q, "note": "événement"}`, ev.Seq, ev.AggregateID)
			var in Inserted
			in.Event = ev
			if err := tx.QueryRow(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, headers)
				VALUES ($1, $2, $3, $4, $5) RETURNING id::text, payload::text`,
				ev.AggregateType, ev.AggregateID, ev.EventType, payload, hdr).Scan(&in.ID, &in.Payload); err != nil {
				return err
			}
			out = append(out, in)
		}
		return nil
	})
	if err != nil {
		e.T.Fatalf("insert events: %v", err)
	}
	return out, e.CurrentLSN(ctx)
}

// CurrentLSN is pg_current_wal_insert_lsn(): at or past the end of every
// record already committed. (pg_current_wal_lsn, the write position, can
// lag behind a commit under synchronous_commit=off, as pgtest runs.)
func (e *Env) CurrentLSN(ctx context.Context) outboxrelay.LSN {
	e.T.Helper()
	var s string
	if err := e.Pool.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
		e.T.Fatalf("pg_current_wal_insert_lsn: %v", err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		e.T.Fatal(err)
	}
	return lsn
}

// Confirmed is the slot's confirmed_flush_lsn, 0 when the slot is missing.
func (e *Env) Confirmed(ctx context.Context, slot string) outboxrelay.LSN {
	e.T.Helper()
	var s *string
	err := e.Pool.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&s)
	if err == pgx.ErrNoRows || s == nil {
		return 0
	}
	if err != nil {
		e.T.Fatalf("read slot: %v", err)
	}
	lsn, err := pglogrepl.ParseLSN(*s)
	if err != nil {
		e.T.Fatal(err)
	}
	return lsn
}

// WaitConfirmed polls until the slot's confirmed_flush_lsn reaches want.
func (e *Env) WaitConfirmed(ctx context.Context, slot string, want outboxrelay.LSN) {
	e.T.Helper()
	var got outboxrelay.LSN
	if !eventually.True(ctx, 20*time.Millisecond, func() bool {
		got = e.Confirmed(ctx, slot)
		return got >= want
	}) {
		e.T.Fatalf("slot %s confirmed_flush_lsn is %s, never reached %s", slot, got, want)
	}
}

// Config is a relay configuration with test-friendly timings; Start builds
// it with the same constructor as cmd/outbox-relay.
type Config wire.Config

// Config returns a relay configuration for this env with short intervals.
func (e *Env) Config() Config { return e.ConfigFor(e.Kafka.Addrs()) }

// Running is a relay running in-process.
type Running struct {
	Relay    *relay.Relay
	Registry *prometheus.Registry
	cancel   context.CancelFunc
	done     chan struct{}
	err      error // Run's result, set before done closes
}

// Start runs a relay with cfg until Stop or the end of the test.
func Start(t testing.TB, cfg Config) *Running {
	t.Helper()
	reg := prometheus.NewRegistry()
	logger := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	if os.Getenv("RELAYTEST_QUIET") != "" {
		logger = zerolog.Nop()
	}
	r, err := wire.Relay(wire.Config(cfg), logger, reg)
	if err != nil {
		t.Fatalf("wire.Relay: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &Running{Relay: r, Registry: reg, cancel: cancel, done: make(chan struct{})}
	go func() {
		run.err = r.Run(ctx)
		close(run.done)
	}()
	t.Cleanup(func() { _ = run.Stop() })
	return run
}

// Stop cancels the relay (a graceful shutdown) and returns Run's error.
func (r *Running) Stop() error {
	r.cancel()
	<-r.done
	return r.err
}

// Done is closed when Run returns; Err then holds its result.
func (r *Running) Done() <-chan struct{} { return r.done }

// Err is Run's result once Done is closed.
func (r *Running) Err() error {
	<-r.done
	return r.err
}

// Metric returns the sum of a metric's samples (all label values), or 0.
func (r *Running) Metric(name string) float64 { return MetricSum(r.Registry, name) }

// MetricSum returns the sum of the samples of the metric name in g (all
// label values; a histogram counts its samples), or 0.
func MetricSum(g prometheus.Gatherer, name string) float64 {
	mfs, err := g.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

// WaitReady polls until the relay streams.
func (r *Running) WaitReady(ctx context.Context, t testing.TB) {
	t.Helper()
	if !eventually.True(ctx, 10*time.Millisecond, func() bool { return r.Relay.State().Ready() }) {
		st := r.Relay.State()
		t.Fatalf("relay not ready: %s %s", st.Phase, st.Detail)
	}
}

// Topics lists outbox.event.<type> for the aggregate types.
func Topics(types ...string) []string {
	out := make([]string, len(types))
	for i, ty := range types {
		out[i] = "outbox.event." + strings.ToLower(ty)
	}
	return out
}
