package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/admin"
	"github.com/outbox-relay/outbox-relay/checkpoint"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

// pg is one throwaway Postgres shared by the package's tests; each test gets
// its own database and slot.
var pg *pgtest.Server

func TestMain(m *testing.M) {
	os.Exit(kafkatest.Main(func() int { return pgtest.Main(m, &pg) }))
}

var slotSeq atomic.Int64

// fixture is one test's database, broker and slot.
type fixture struct {
	*relaytest.Env
	slot string
	// pgURLInEnv makes start pass the database as OUTBOX_RELAY_PG_URL,
	// not --pg-url.
	pgURLInEnv bool
}

// env is the environment start gives the relay.
func (f *fixture) env(k string) string {
	if f.pgURLInEnv && k == envName("pg-url") {
		return f.URL
	}
	return ""
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return &fixture{Env: relaytest.NewEnv(t, pg, kafkatest.Options{}), slot: fmt.Sprintf("ops_%d_%d", os.Getpid(), slotSeq.Add(1))}
}

func noEnv(string) string { return "" }

// cli runs one command in-process and returns what it printed.
func (f *fixture) cli(ctx context.Context, args ...string) (stdout string, err error) {
	var out, errOut bytes.Buffer
	args = append(args, "--pg-url", f.URL, "--slot", f.slot)
	if strings.HasPrefix(args[0], "slot ") {
		args = append(strings.Fields(args[0]), args[1:]...)
	}
	err = run(ctx, args, noEnv, &out, &errOut)
	if err != nil {
		err = fmt.Errorf("%w (stderr: %s)", err, errOut.String())
	}
	return out.String(), err
}

// syncBuffer is a log sink read while the relay writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// daemon is `outbox-relay run` running in-process.
type daemon struct {
	log    *syncBuffer
	cancel context.CancelFunc
	done   chan error
	addr   string
}

// start runs `outbox-relay run` with test timings and waits for its HTTP
// server; extra flags are appended.
func (f *fixture) start(ctx context.Context, t *testing.T, extra ...string) *daemon {
	t.Helper()
	args := []string{"run", "--slot", f.slot,
		"--kafka-brokers", strings.Join(f.Kafka.Addrs(), ","),
		"--status-interval", "100ms", "--backoff-min", "50ms", "--backoff-max", "500ms",
		"--standby-poll", "200ms", "--shutdown-timeout", "10s",
		"--kafka-retry-max", "2", "--kafka-retry-backoff", "50ms", "--kafka-timeout", "5s",
		"--metrics-addr", "127.0.0.1:0", "--log-format", "json"}
	if !f.pgURLInEnv {
		args = append(args, "--pg-url", f.URL)
	}
	args = append(args, extra...)
	rctx, cancel := context.WithCancel(context.Background())
	d := &daemon{log: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- run(rctx, args, f.env, io.Discard, d.log) }()
	t.Cleanup(func() { _ = d.stop() })
	// Wait until the relay serves HTTP or has exited, whichever comes
	// first: a relay that refuses to start (a gap) logs its serving line
	// and exits at once, and the caller waits for that exit (waitExit).
	// Look for the exit before reading the log: every line is written
	// before run returns, so a log read after the exit is complete.
	// (Regression: the exit was looked for after, and a relay that served
	// and exited between the two reads failed the test as "exited before
	// serving HTTP", about one run in four on a loaded machine.)
	if !eventually.True(ctx, 10*time.Millisecond, func() bool {
		exited := false
		select {
		case err := <-d.done:
			d.done <- err // for waitExit and stop
			exited = true
		default:
		}
		d.addr = servingAddr(d.log.String())
		return d.addr != "" || exited
	}) {
		t.Fatalf("relay never served HTTP:\n%s", d.log.String())
	}
	return d
}

// servingAddr is the address in the relay's "serving /metrics" log line,
// or "" before it.
func servingAddr(logText string) string {
	sc := bufio.NewScanner(strings.NewReader(logText))
	for sc.Scan() {
		var line struct{ Addr, Message string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && strings.HasPrefix(line.Message, "serving /metrics") {
			return line.Addr
		}
	}
	return ""
}

// stop cancels the relay (a graceful shutdown) and returns run's error.
func (d *daemon) stop() error {
	d.cancel()
	err, ok := <-d.done
	if ok {
		close(d.done)
	}
	return err
}

func (d *daemon) get(t *testing.T, path string) (int, string) {
	t.Helper()
	if d.addr == "" {
		t.Fatalf("GET %s: the relay exited without serving HTTP:\n%s", path, d.log.String())
	}
	resp, err := http.Get("http://" + d.addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitExit waits for a relay expected to refuse to start; it fails the
// test as soon as the relay streams instead.
func (d *daemon) waitExit(ctx context.Context, t *testing.T) error {
	t.Helper()
	var exitErr error
	if !eventually.True(ctx, 20*time.Millisecond, func() bool {
		select {
		case exitErr = <-d.done:
			close(d.done)
			return true
		default:
		}
		if d.addr == "" {
			return false // it never served: nothing to ask
		}
		resp, err := http.Get("http://" + d.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Fatalf("relay started streaming instead of refusing:\n%s", d.log.String())
			}
		}
		return false
	}) {
		t.Fatalf("relay neither stopped nor streamed:\n%s", d.log.String())
	}
	return exitErr
}

// waitReady polls /readyz until it answers 200.
func (d *daemon) waitReady(ctx context.Context, t *testing.T) {
	t.Helper()
	var code int
	var body string
	if !eventually.True(ctx, 20*time.Millisecond, func() bool {
		code, body = d.get(t, "/readyz")
		return code == http.StatusOK
	}) {
		t.Fatalf("/readyz never ready: %d %s\n%s", code, body, d.log.String())
	}
}

// metric sums the samples of name in a /metrics scrape (a histogram's
// _count or _sum when name says so).
func metric(scrape, name string) (float64, bool) {
	var sum float64
	found := false
	for _, line := range strings.Split(scrape, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(rest[strings.LastIndex(rest, "}")+1:])
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err == nil {
			sum += v
			found = true
		}
	}
	return sum, found
}

func (f *fixture) insert(ctx context.Context, types ...string) ([]relaytest.Inserted, pglogrepl.LSN) {
	evs := make([]relaytest.Event, len(types))
	for i, ty := range types {
		evs[i] = relaytest.Event{AggregateType: ty, AggregateID: fmt.Sprintf("agg-%d", i), EventType: "Created", Seq: i}
	}
	return f.Insert(ctx, evs)
}

// flushWAL waits until the commits before it are flushed. pgtest runs with
// synchronous_commit off, and decoding (peek, like the WAL sender) only reads
// flushed WAL; the WAL writer flushes within wal_writer_delay.
func (f *fixture) flushWAL(ctx context.Context, t *testing.T) {
	t.Helper()
	var target string
	if err := f.Pool.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&target); err != nil {
		t.Fatal(err)
	}
	if !eventually.True(ctx, 20*time.Millisecond, func() bool {
		var flushed bool
		if err := f.Pool.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn", target).Scan(&flushed); err != nil {
			t.Fatal(err)
		}
		return flushed
	}) {
		t.Fatalf("WAL never flushed up to %s", target)
	}
}

// stopRelay stops d and waits until Postgres has released the slot: the
// WAL sender exits a moment after the relay closes its connection.
func (f *fixture) stopRelay(ctx context.Context, t *testing.T, d *daemon) {
	t.Helper()
	if err := d.stop(); err != nil {
		t.Fatalf("relay: %v\n%s", err, d.log.String())
	}
	if !eventually.True(ctx, 10*time.Millisecond, func() bool {
		var active bool
		err := f.Pool.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", f.slot).Scan(&active)
		if err != nil {
			t.Fatalf("read slot: %v", err)
		}
		return !active
	}) {
		t.Fatal("the slot stayed active after the relay stopped")
	}
}

func ids(evs []relaytest.Inserted) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func TestPreflightNamesTheFix(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t)

	out, err := f.cli(ctx, "preflight")
	if err != nil {
		t.Fatalf("preflight on a ready database: %v\n%s", err, out)
	}
	if !strings.Contains(out, "The relay can start.") {
		t.Fatalf("preflight output lacks the verdict:\n%s", out)
	}

	// Roles are cluster-wide: one per fixture.
	role := "norepl_" + f.slot
	cases := []struct {
		name  string
		setup string
		args  []string
		want  []string
	}{
		{
			name:  "role without REPLICATION",
			setup: fmt.Sprintf(`CREATE ROLE %s LOGIN; GRANT SELECT ON outbox TO %[1]s`, role),
			args:  []string{"--pg-url", strings.Replace(f.URL, "postgres@", role+"@", 1)},
			want:  []string{"FAIL", fmt.Sprintf(`role %q has neither the REPLICATION attribute nor rds_replication`, role), fmt.Sprintf(`ALTER ROLE %q WITH REPLICATION;`, role)},
		},
		{
			name:  "publication without the table",
			setup: `CREATE TABLE other (id int); CREATE PUBLICATION pub_other FOR TABLE other`,
			args:  []string{"--publication", "pub_other"},
			want:  []string{"FAIL", `publication "pub_other" does not include "public"."outbox"`, `ALTER PUBLICATION "pub_other" ADD TABLE "public"."outbox";`},
		},
		{
			name:  "publication without inserts",
			setup: `CREATE PUBLICATION pub_deletes FOR TABLE outbox WITH (publish = 'delete')`,
			args:  []string{"--publication", "pub_deletes"},
			want:  []string{"FAIL", `publication "pub_deletes" does not publish inserts`, `ALTER PUBLICATION "pub_deletes" SET (publish = 'insert');`},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := f.Pool.Exec(ctx, c.setup); err != nil {
				t.Fatal(err)
			}
			// The later --pg-url wins over the fixture's.
			args := append([]string{"preflight", "--pg-url", f.URL, "--slot", f.slot}, c.args...)
			var out, errOut bytes.Buffer
			err := run(ctx, args, noEnv, &out, &errOut)
			if !errors.Is(err, errProblems) {
				t.Fatalf("preflight returned %v, want a failure (exit 1)\n%s", err, out.String())
			}
			for _, w := range c.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("preflight output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}

	// Regression: preflight compared format_type's display name and refused
	// a varchar(n) payload ("has type character varying(2000); use ...
	// varchar"). A PG15 row filter on the outbox is reported, not hidden.
	t.Run("varchar payload and a row filter", func(t *testing.T) {
		if _, err := f.Pool.Exec(ctx, `CREATE TABLE outbox_v (LIKE outbox INCLUDING ALL);
			ALTER TABLE outbox_v ALTER COLUMN payload TYPE varchar(2000);
			CREATE PUBLICATION pub_filtered FOR TABLE outbox_v WHERE (aggregate_type <> 'internal') WITH (publish = 'insert')`); err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		err := run(ctx, []string{"preflight", "--pg-url", f.URL, "--slot", f.slot, "--table", "outbox_v", "--publication", "pub_filtered"}, noEnv, &out, &errOut)
		if err != nil {
			t.Fatalf("preflight refused a varchar(2000) payload: %v\n%s", err, out.String())
		}
		for _, w := range []string{"WARN", "row filter", "aggregate_type <> 'internal'"} {
			if !strings.Contains(out.String(), w) {
				t.Errorf("preflight output lacks %q:\n%s", w, out.String())
			}
		}
	})

	t.Run("wal_level replica", func(t *testing.T) {
		replica := pgtest.New(t, pgtest.Options{WALLevel: "replica"})
		url, err := replica.CreateDatabase(ctx, "app")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, relaytest.OutboxSQL(t)); err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		err = run(ctx, []string{"preflight", "--pg-url", url, "--output", "json"}, noEnv, &out, &errOut)
		if !errors.Is(err, errProblems) {
			t.Fatalf("preflight on wal_level=replica returned %v, want a failure\n%s", err, out.String())
		}
		var rep preflightReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("--output json is not JSON: %v\n%s", err, out.String())
		}
		if rep.CanStart {
			t.Error("can_start is true on a wal_level=replica server")
		}
		var found bool
		for _, c := range rep.Checks {
			if c.Name == "wal_level" {
				found = true
				if c.Status != "fail" || !strings.Contains(c.Detail, "'replica'") || !strings.Contains(c.Fix, "wal_level = logical") {
					t.Errorf("wal_level check = %+v, want a failure naming ALTER SYSTEM SET wal_level = logical", c)
				}
			}
		}
		if !found {
			t.Errorf("no wal_level check in %s", out.String())
		}
	})
}

func TestSetupStatusAndPeek(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t)

	sql, err := f.cli(ctx, "setup", "--print-sql")
	if err != nil || !strings.Contains(sql, "CREATE PUBLICATION") || !strings.Contains(sql, "pg_create_logical_replication_slot('"+f.slot+"', 'pgoutput')") ||
		!strings.Contains(sql, "CREATE TABLE IF NOT EXISTS outbox_relay.checkpoint") {
		t.Fatalf("setup --print-sql: %v\n%s", err, sql)
	}
	if got := f.Confirmed(ctx, f.slot); got != 0 {
		t.Fatalf("--print-sql created the slot (at %s)", got)
	}
	for range 2 { // idempotent
		if out, err := f.cli(ctx, "setup"); err != nil {
			t.Fatalf("setup: %v\n%s", err, out)
		}
	}

	// The relay delivers a first batch and stops; what is written after is
	// what a restart would send.
	d := f.start(ctx, t)
	d.waitReady(ctx, t)
	_, lsn := f.insert(ctx, "order", "order")
	f.WaitConfirmed(ctx, f.slot, lsn)
	f.stopRelay(ctx, t, d)
	pendingA, _ := f.insert(ctx, "order", "payment")
	pendingB, _ := f.insert(ctx, "shipment")
	want := append(ids(pendingA), ids(pendingB)...)
	f.flushWAL(ctx, t)
	before := f.Confirmed(ctx, f.slot)

	out, err := f.cli(ctx, "slot peek", "--output", "json")
	if err != nil {
		t.Fatalf("slot peek: %v\n%s", err, out)
	}
	var peek peekReport
	if err := json.Unmarshal([]byte(out), &peek); err != nil {
		t.Fatalf("peek JSON: %v\n%s", err, out)
	}
	var got []string
	for _, e := range peek.Events {
		got = append(got, e.ID)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("peek listed %v, want exactly the events written while the relay was stopped %v", got, want)
	}
	if e := peek.Events[1]; e.Topic != "outbox.event.payment" || e.Key != want[1] || e.CommitTime.IsZero() || e.LSN == "" {
		t.Errorf("peeked event %+v lacks its topic, key, LSN or commit time", e)
	}
	if after := f.Confirmed(ctx, f.slot); after != before {
		t.Fatalf("peek moved the slot from %s to %s", before, after)
	}
	// Peeking twice shows the same: nothing was consumed.
	out, err = f.cli(ctx, "slot peek", "--limit", "2")
	if err != nil {
		t.Fatalf("slot peek --limit 2: %v", err)
	}
	if !strings.Contains(out, want[0]) || !strings.Contains(out, want[1]) || strings.Contains(out, want[2]) || !strings.Contains(out, "--limit 2") {
		t.Fatalf("peek --limit 2 table:\n%s", out)
	}

	out, err = f.cli(ctx, "status", "--output", "json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	var st statusReport
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	if !st.Slot.Exists || st.Slot.Plugin != "pgoutput" || st.Slot.Active || st.Slot.ConfirmedFlushLSN != before.String() ||
		st.Slot.UnconfirmedBytes <= 0 || st.Checkpoint == nil || st.Checkpoint.LSN == "" || st.Gap != nil ||
		strings.Join(st.Publication.Tables, ",") != "public.outbox" || strings.Join(st.Publication.Operations, ",") != "insert" {
		t.Fatalf("status does not describe the stopped relay's slot:\n%s", out)
	}
	if out, err := f.cli(ctx, "status"); err != nil || !strings.Contains(out, "confirmed_flush_lsn") || !strings.Contains(strings.Join(strings.Fields(out), " "), "PROBLEMS none") {
		t.Fatalf("status table: %v\n%s", err, out)
	}
}

func TestSlotSkipSkipsExactlyOneEvent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t)
	topics := relaytest.Topics("order", "poison")

	d := f.start(ctx, t)
	d.waitReady(ctx, t)
	first, lsn := f.insert(ctx, "order")
	f.WaitConfirmed(ctx, f.slot, lsn)
	f.stopRelay(ctx, t, d)

	poison, _ := f.insert(ctx, "poison")
	next, _ := f.insert(ctx, "order", "order")
	f.flushWAL(ctx, t)

	if _, err := f.cli(ctx, "slot skip", "--event", first[0].ID, "--yes"); err == nil || !strings.Contains(err.Error(), "not pending") {
		t.Fatalf("skipping a delivered event: %v, want a refusal saying it is not pending", err)
	}
	if _, err := f.cli(ctx, "slot skip", "--event", next[0].ID, "--yes"); err == nil || !strings.Contains(err.Error(), "committed before") {
		t.Fatalf("skipping an event behind a pending one: %v, want a refusal", err)
	}
	before := f.Confirmed(ctx, f.slot)
	out, err := f.cli(ctx, "slot skip", "--event", poison[0].ID)
	if !errors.Is(err, errNeedYes) || f.Confirmed(ctx, f.slot) != before || !strings.Contains(out, poison[0].ID) {
		t.Fatalf("skip without --yes: %v (slot %s -> %s)\n%s", err, before, f.Confirmed(ctx, f.slot), out)
	}

	out, err = f.cli(ctx, "slot skip", "--event", poison[0].ID, "--yes", "--output", "json")
	if err != nil {
		t.Fatalf("slot skip: %v\n%s", err, out)
	}
	var mv moveReport
	if err := json.Unmarshal([]byte(out), &mv); err != nil {
		t.Fatalf("skip JSON: %v\n%s", err, out)
	}
	if !mv.Applied || len(mv.Skipped) != 1 || mv.Skipped[0].ID != poison[0].ID {
		t.Fatalf("skip reported %+v, want exactly event %s skipped", mv, poison[0].ID)
	}
	if _, err := f.cli(ctx, "slot skip", "--event", next[1].ID, "--yes"); err == nil || !strings.Contains(err.Error(), "--whole-transaction") {
		t.Fatalf("skipping one event of a two-event transaction: %v, want a refusal naming --whole-transaction", err)
	}

	// The relay starts without a gap (the skip moved its record too) and
	// sends what follows, never the skipped event.
	d = f.start(ctx, t)
	d.waitReady(ctx, t)
	if _, err := f.cli(ctx, "slot advance", "--to", f.CurrentLSN(ctx).String(), "--yes"); err == nil || !strings.Contains(err.Error(), "active") {
		t.Fatalf("advancing an active slot: %v, want a refusal", err)
	}
	last, lsn := f.insert(ctx, "order")
	f.WaitConfirmed(ctx, f.slot, lsn)
	want := map[string]bool{first[0].ID: true, next[0].ID: true, next[1].ID: true, last[0].ID: true}
	recs, err := kafkatest.ReadAll(ctx, f.Kafka.Addrs(), topics, len(want))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if string(r.Key) == poison[0].ID {
			t.Fatalf("the skipped event %s was sent", poison[0].ID)
		}
		if !want[string(r.Key)] {
			t.Fatalf("unexpected record %s", r.Key)
		}
		delete(want, string(r.Key))
	}
	if len(want) > 0 {
		t.Fatalf("events never sent: %v", want)
	}
	f.stopRelay(ctx, t, d)
}

func TestGapIsReportedUnlessAccepted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t)

	d := f.start(ctx, t)
	d.waitReady(ctx, t)
	_, lsn := f.insert(ctx, "order")
	f.WaitConfirmed(ctx, f.slot, lsn)
	f.stopRelay(ctx, t, d)
	var recorded string
	if err := f.Pool.QueryRow(ctx, "SELECT lsn::text FROM outbox_relay.checkpoint WHERE slot = $1", f.slot).Scan(&recorded); err != nil {
		t.Fatalf("read the relay's record: %v", err)
	}

	// Behind the relay's back: an event is written, the slot is dropped and
	// recreated past it.
	lost, _ := f.insert(ctx, "order")
	if _, err := f.Pool.Exec(ctx, "SELECT pg_drop_replication_slot($1)", f.slot); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", f.slot); err != nil {
		t.Fatal(err)
	}
	recreated := f.Confirmed(ctx, f.slot)

	out, err := f.cli(ctx, "status")
	if !errors.Is(err, errProblems) || !strings.Contains(out, "gap") {
		t.Fatalf("status after the slot was recreated: %v, want a gap problem\n%s", err, out)
	}

	d = f.start(ctx, t)
	err = d.waitExit(ctx, t)
	var gap *checkpoint.GapError
	if !errors.As(err, &gap) {
		t.Fatalf("run returned %v, want a gap report", err)
	}
	msg := err.Error()
	for _, w := range []string{recorded, recreated.String(), "--accept-gap", "docs/operations.md"} {
		if !strings.Contains(msg, w) {
			t.Errorf("gap report lacks %q: %s", w, msg)
		}
	}

	d = f.start(ctx, t, "--accept-gap")
	d.waitReady(ctx, t)
	after, lsn := f.insert(ctx, "order")
	f.WaitConfirmed(ctx, f.slot, lsn)
	recs, err := kafkatest.ReadAll(ctx, f.Kafka.Addrs(), relaytest.Topics("order"), 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if string(r.Key) == lost[0].ID {
			t.Fatalf("event %s in the gap was delivered: the slot was not recreated past it", r.Key)
		}
	}
	if got := string(recs[len(recs)-1].Key); got != after[0].ID {
		t.Fatalf("last record %s, want the event written after --accept-gap %s", got, after[0].ID)
	}
	if !strings.Contains(d.log.String(), "--accept-gap") {
		t.Error("accepting the gap was not logged")
	}
	f.stopRelay(ctx, t, d)
	var movedBy string
	if err := f.Pool.QueryRow(ctx, "SELECT lsn::text, moved_by FROM outbox_relay.checkpoint WHERE slot = $1", f.slot).Scan(&recorded, &movedBy); err != nil {
		t.Fatal(err)
	}
	if l, _ := pglogrepl.ParseLSN(recorded); l < lsn || movedBy != checkpoint.MovedByRelay {
		t.Fatalf("record after the accepted gap is %s by %q, want at least %s by the relay", recorded, movedBy, lsn)
	}
}

func TestMetricsAndReadiness(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t)

	primary := f.start(ctx, t)
	primary.waitReady(ctx, t)
	standby := f.start(ctx, t)
	var code int
	var body string
	if !eventually.True(ctx, 20*time.Millisecond, func() bool {
		code, body = standby.get(t, "/readyz")
		if code == http.StatusOK {
			t.Fatalf("a second relay on the same slot is ready: %s", body)
		}
		return code == http.StatusServiceUnavailable && strings.HasPrefix(body, "standby")
	}) {
		t.Fatalf("standby /readyz never said standby: %d %q", code, body)
	}
	if code, _ := standby.get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("standby /healthz = %d, want 200: the process is alive", code)
	}

	const n = 40
	types := make([]string, n)
	for i := range types {
		types[i] = []string{"order", "payment"}[i%2]
	}
	_, lsn := f.insert(ctx, types...)
	recs, err := kafkatest.ReadAll(ctx, f.Kafka.Addrs(), relaytest.Topics("order", "payment"), n)
	if err != nil {
		t.Fatal(err)
	}
	f.WaitConfirmed(ctx, f.slot, lsn)

	var scrape string
	if !eventually.True(ctx, 50*time.Millisecond, func() bool {
		_, scrape = primary.get(t, "/metrics")
		// The slot is polled every second: wait for a poll of the active slot.
		rec, _ := metric(scrape, "outbox_relay_checkpoint_recorded_lsn")
		active, _ := metric(scrape, "outbox_relay_slot_active")
		return rec >= float64(lsn) && active == 1
	}) {
		t.Fatalf("metrics never showed the record and the slot lag:\n%s", scrape)
	}
	for name, want := range map[string]float64{
		"outbox_relay_sink_acked_total":                            float64(len(recs)),
		"outbox_relay_events_acked_total":                          float64(len(recs)),
		"outbox_relay_sink_produced_total":                         float64(len(recs)),
		"outbox_relay_sink_commit_to_ack_seconds_count":            float64(len(recs)),
		"outbox_relay_replication_commit_to_receive_seconds_count": float64(len(recs)),
	} {
		if got, _ := metric(scrape, name); got != want {
			t.Errorf("%s = %v, want %v (records delivered)", name, got, want)
		}
	}
	if sum, _ := metric(scrape, "outbox_relay_sink_commit_to_ack_seconds_sum"); sum <= 0 {
		t.Errorf("commit-to-ack latency sum is %v", sum)
	}
	if v, _ := metric(scrape, `outbox_relay_slot_wal_status{status="reserved"}`); v != 1 {
		t.Errorf("slot wal_status reserved gauge = %v, want 1", v)
	}
	if _, ok := metric(scrape, "outbox_relay_slot_lag_bytes"); !ok {
		t.Error("outbox_relay_slot_lag_bytes missing")
	}

	// Failover: the standby takes over when the primary stops.
	if err := primary.stop(); err != nil {
		t.Fatalf("primary: %v", err)
	}
	standby.waitReady(ctx, t)
	if err := standby.stop(); err != nil {
		t.Fatalf("standby: %v", err)
	}
}

// checkpointRow is the relay's record of one slot as stored.
type checkpointRow struct {
	Exists    bool
	LSN       string
	UpdatedAt time.Time
	MovedBy   string
}

func (f *fixture) record(ctx context.Context, t *testing.T) checkpointRow {
	t.Helper()
	var r checkpointRow
	err := f.Pool.QueryRow(ctx, "SELECT lsn::text, updated_at, moved_by FROM outbox_relay.checkpoint WHERE slot = $1", f.slot).Scan(&r.LSN, &r.UpdatedAt, &r.MovedBy)
	if errors.Is(err, pgx.ErrNoRows) {
		return r
	}
	if err != nil {
		t.Fatalf("read the relay's record: %v", err)
	}
	r.Exists = true
	return r
}

func (f *fixture) flushedLSN(ctx context.Context, t *testing.T) pglogrepl.LSN {
	t.Helper()
	var s string
	if err := f.Pool.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// `slot advance --to` was not capped: Postgres silently stops an advance at
// its flushed WAL, so a mistyped LSN skipped every pending event while the
// checkpoint record was raised to the typo, ahead of the slot, where it hid
// any later gap until the WAL caught up with it.
func TestSlotAdvanceRefusesPositionsPastTheFlushedWAL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t)
	if out, err := f.cli(ctx, "setup"); err != nil {
		t.Fatalf("setup: %v\n%s", err, out)
	}
	pending, _ := f.insert(ctx, "order")
	f.flushWAL(ctx, t)
	slot, rec := f.Confirmed(ctx, f.slot), f.record(ctx, t)
	flushed := f.flushedLSN(ctx, t)
	typo := flushed + 1<<32 // 0/16B3748 typed as 1/16B3748

	inError := regexp.MustCompile(`past the server's flushed WAL (\S+) `)
	for _, args := range [][]string{{"--to", typo.String()}, {"--to", typo.String(), "--yes"}} {
		_, err := f.cli(ctx, append([]string{"slot advance"}, args...)...)
		if err == nil || errors.Is(err, errNeedYes) {
			t.Fatalf("slot advance %v: %v, want a refusal", args, err)
		}
		msg := err.Error()
		m := inError.FindStringSubmatch(msg)
		if m == nil || !strings.Contains(msg, typo.String()) || !strings.Contains(msg, "--to") {
			t.Fatalf("slot advance %v: the refusal does not name the target, the flushed WAL and the fix: %v", args, err)
		}
		if named, err := pglogrepl.ParseLSN(m[1]); err != nil || named < flushed || named >= typo {
			t.Errorf("the refusal names %s as the flushed WAL; it was %s when the test read it", m[1], flushed)
		}
	}
	if got := f.Confirmed(ctx, f.slot); got != slot {
		t.Fatalf("the refused advance moved the slot from %s to %s", slot, got)
	}
	if got := f.record(ctx, t); got != rec {
		t.Fatalf("the refused advance changed the record from %+v to %+v", rec, got)
	}

	// A position within the flushed WAL moves the slot, and the record with it.
	out, err := f.cli(ctx, "slot peek", "--output", "json")
	if err != nil {
		t.Fatalf("slot peek: %v\n%s", err, out)
	}
	var peek peekReport
	if err := json.Unmarshal([]byte(out), &peek); err != nil || len(peek.Events) != 1 {
		t.Fatalf("peek: %v\n%s", err, out)
	}
	end := peek.Events[0].CommitEndLSN
	out, err = f.cli(ctx, "slot advance", "--to", end, "--yes", "--output", "json")
	if err != nil {
		t.Fatalf("slot advance --to %s: %v\n%s", end, err, out)
	}
	var mv moveReport
	if err := json.Unmarshal([]byte(out), &mv); err != nil || !mv.Applied || mv.To != end || len(mv.Skipped) != 1 || mv.Skipped[0].ID != pending[0].ID {
		t.Fatalf("advance reported %v %+v, want event %s skipped up to %s", err, mv, pending[0].ID, end)
	}
	if got := f.Confirmed(ctx, f.slot).String(); got != end {
		t.Errorf("slot at %s after the advance, want %s", got, end)
	}
	if got := f.record(ctx, t); got.LSN != end || got.MovedBy != checkpoint.MovedByAdvance {
		t.Errorf("record after the advance is %+v, want %s by %q", got, end, checkpoint.MovedByAdvance)
	}
}

// `slot advance` raised the checkpoint record before the advance and left
// it raised when Postgres refused the advance: the record stood ahead of the
// slot, and a later move of the slot behind the relay's back up to that
// position went unreported.
func TestFailedSlotAdvanceLeavesTheRecord(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t)
	if out, err := f.cli(ctx, "setup"); err != nil {
		t.Fatalf("setup: %v\n%s", err, out)
	}
	f.insert(ctx, "order")
	f.flushWAL(ctx, t)
	target := f.flushedLSN(ctx, t)
	slot := f.Confirmed(ctx, f.slot)

	// A role that may write the record but not use replication slots: every
	// check before the advance passes, the advance itself is refused.
	role := "noslot_" + f.slot
	if _, err := f.Pool.Exec(ctx, fmt.Sprintf(`CREATE ROLE %[1]s LOGIN; GRANT USAGE ON SCHEMA outbox_relay TO %[1]s;
		GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_relay.checkpoint TO %[1]s`, role)); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, strings.Replace(f.URL, "postgres@", role+"@", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	for _, c := range []struct{ name, setup string }{
		{"record below the target", ""},
		{"no record yet", "DELETE FROM outbox_relay.checkpoint"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.setup != "" {
				if _, err := f.Pool.Exec(ctx, c.setup); err != nil {
					t.Fatal(err)
				}
			}
			rec := f.record(ctx, t)
			_, err := admin.AdvanceSlot(ctx, conn, f.slot, target, checkpoint.MovedByAdvance)
			if err == nil || !strings.Contains(err.Error(), "REPLICATION") {
				t.Fatalf("advance by a role without REPLICATION: %v, want a refusal naming the attribute", err)
			}
			if got := f.Confirmed(ctx, f.slot); got != slot {
				t.Fatalf("the slot moved from %s to %s", slot, got)
			}
			if got := f.record(ctx, t); got != rec {
				t.Fatalf("the failed advance left the record at %+v; it was %+v", got, rec)
			}
		})
	}
}

// partitionedOutboxSQL is the default outbox split by aggregate type, with a
// publication a DBA made without publish_via_partition_root: pgoutput then
// names the rows by partition.
const partitionedOutboxSQL = `
CREATE TABLE outbox (
    id uuid NOT NULL DEFAULT gen_random_uuid(), aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    event_type text NOT NULL, payload jsonb NOT NULL, headers jsonb, created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, aggregate_type)
) PARTITION BY LIST (aggregate_type);
CREATE TABLE outbox_order PARTITION OF outbox FOR VALUES IN ('order');
CREATE TABLE outbox_other PARTITION OF outbox DEFAULT;
CREATE PUBLICATION outbox_relay FOR TABLE outbox WITH (publish = 'insert');`

// Regression: status compared the outbox's name with pg_publication_tables,
// which lists a partitioned outbox's partitions, and reported "does not
// include" (whose fix, ADD TABLE, fails: it is included); slot peek (and so
// slot skip) matched rows by name and saw none of a partitioned outbox's.
func TestStatusAndPeekUnderstandPartitionedOutbox(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := &fixture{Env: relaytest.NewEnvWith(t, pg, kafkatest.Options{}, partitionedOutboxSQL),
		slot: fmt.Sprintf("ops_%d_%d", os.Getpid(), slotSeq.Add(1))}
	if out, err := f.cli(ctx, "setup"); err != nil {
		t.Fatalf("setup: %v\n%s", err, out)
	}
	if out, err := f.cli(ctx, "status"); err != nil {
		t.Fatalf("status on a partitioned outbox: %v\n%s", err, out)
	}
	pending, _ := f.insert(ctx, "order", "payment", "order")
	f.flushWAL(ctx, t)
	out, err := f.cli(ctx, "slot peek", "--output", "json")
	if err != nil {
		t.Fatalf("slot peek: %v\n%s", err, out)
	}
	var peek peekReport
	if err := json.Unmarshal([]byte(out), &peek); err != nil {
		t.Fatalf("slot peek json: %v\n%s", err, out)
	}
	var got []string
	for _, e := range peek.Events {
		got = append(got, e.ID)
	}
	if want := ids(pending); !slices.Equal(got, want) {
		t.Fatalf("slot peek lists %v, want the rows of both partitions %v", got, want)
	}
}
