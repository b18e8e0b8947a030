package schematest_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/route"
)

// The schema matrix pins issue 8's field reports: a partitioned outbox whose
// every event was dropped while the slot moved on, a mixed-case publication
// that never streamed, names with capitals and spaces, payload types the
// preflight refused. Each shape gets the same stream of events and must
// deliver it completely, once, in per-aggregate order, with the expected id
// header and payload bytes, and the slot must end past the last commit.
// Each shape runs in three setups: the relay's own (Create, nothing exists),
// a publication a DBA made with the plain statement (no
// publish_via_partition_root) with the relay creating the slot, and that
// publication plus a DBA-made slot with Create off.

const (
	caseTimeout  = 90 * time.Second
	readyTimeout = 10 * time.Second
	// settleTimeout bounds the wait for the slot to pass the last commit;
	// a healthy relay needs well under a second.
	settleTimeout = 15 * time.Second
	// toastBytes is the TOASTed payload's size: 1 MB.
	toastBytes = 1_000_000
	// toastMaxMessageBytes lets the sink produce the 1 MB event: a user
	// with such events raises --kafka-max-message-bytes the same way. It
	// stays under kfake's max.message.bytes (1048588) so that a batch
	// sarama fills up to it is still accepted.
	toastMaxMessageBytes = 1_040_000
	// stepsPerBaseTxn and baseTxns size the stream every shape gets.
	stepsPerBaseTxn = 5
	baseTxns        = 6
)

// aggregates are the stream's aggregates; the type routes the topic.
var aggregates = []struct{ typ, id string }{
	{"order", "agg-1"}, {"order", "agg-2"}, {"payment", "agg-3"},
}

// mode is how the publication and slot come to exist.
type mode struct {
	name string
	// dbaPublication: a DBA ran CREATE PUBLICATION ... WITH (publish =
	// 'insert') before the relay started, without publish_via_partition_root.
	dbaPublication bool
	// dbaSlot: the DBA also created the slot, and the relay runs with
	// Create=false (it may create nothing).
	dbaSlot bool
}

var modes = []mode{
	{name: "relay_setup"},
	{name: "dba_publication", dbaPublication: true},
	{name: "dba_publication_and_slot", dbaPublication: true, dbaSlot: true},
}

// shape is one outbox table, its names and its stream.
type shape struct {
	name string
	// schema and table name the outbox as Postgres spells them.
	schema, table string
	// cfgTable is replication.Config.Table as the user writes it.
	cfgTable string
	// publication is replication.Config.Publication.
	publication string
	// slotPrefix, if set, replaces "slot_" in the env's slot name.
	slotPrefix string
	// idType is the id column's definition; idGiven means the writer
	// supplies the ids (text ids have no default).
	idType  string
	idGiven bool
	// payloadType is the payload column's type.
	payloadType string
	// partitioned makes the table PARTITION BY RANGE (created_at) with two
	// leaves, and the base stream writes into both.
	partitioned bool
	// extra writes the shape's own part of the stream after the base one.
	extra func(w *writer)
	// configure adjusts the relay's configuration beyond names.
	configure func(cfg *relaytest.Config)
	// serial runs the shape alone, before the parallel ones: a prepared
	// transaction is "running" cluster-wide until COMMIT PREPARED, and
	// slot creation in every other database waits for it.
	serial bool
}

func defaultShape(name string) shape {
	return shape{
		name: name, schema: "public", table: "outbox", cfgTable: "public.outbox",
		publication: "outbox_relay",
		idType:      "uuid DEFAULT gen_random_uuid()", payloadType: "jsonb",
	}
}

func shapes() []shape {
	with := func(name string, f func(*shape)) shape {
		s := defaultShape(name)
		f(&s)
		return s
	}
	mixedCase := func(cfgTable string) func(*shape) {
		return func(s *shape) { s.schema, s.table, s.cfgTable = "Sales", "Outbox Events", cfgTable }
	}
	return []shape{
		with("two_phase_commit", func(s *shape) { s.extra, s.serial = twoPhase, true }),
		defaultShape("payload_jsonb_id_uuid"),
		with("payload_json", func(s *shape) { s.payloadType = "json" }),
		with("payload_text", func(s *shape) { s.payloadType = "text" }),
		with("payload_varchar", func(s *shape) { s.payloadType = "varchar(2000)" }),
		with("payload_bytea", func(s *shape) { s.payloadType = "bytea" }),
		with("id_bigint", func(s *shape) { s.idType = "bigint GENERATED ALWAYS AS IDENTITY" }),
		with("id_text", func(s *shape) { s.idType, s.idGiven = "text", true }),
		with("partitioned_range", func(s *shape) { s.partitioned, s.extra = true, attachPartition }),
		with("mixed_case_table_literal", mixedCase("Sales.Outbox Events")),
		with("mixed_case_table_quoted", mixedCase(`"Sales"."Outbox Events"`)),
		with("mixed_case_publication", func(s *shape) { s.publication, s.slotPrefix = "OutboxPub", "outboxpub_" }),
		with("toast_1mb_payload", func(s *shape) {
			s.extra = toastPayload
			s.configure = func(cfg *relaytest.Config) { cfg.Sink.MaxMessageBytes = toastMaxMessageBytes }
		}),
		with("savepoint_rollback", func(s *shape) { s.extra = savepoints }),
	}
}

func TestSchemaMatrix(t *testing.T) {
	sum := &summary{}
	t.Cleanup(func() { sum.log(t) })
	for _, sh := range shapes() {
		t.Run(sh.name, func(t *testing.T) {
			if !sh.serial {
				t.Parallel()
			}
			for _, md := range modes {
				t.Run(md.name, func(t *testing.T) {
					if !sh.serial {
						t.Parallel()
					}
					runCase(t, sh, md, sum)
				})
			}
		})
	}
}

// runCase streams the shape's events through a relay set up as md says and
// checks what reached Kafka and where the slot ended.
func runCase(tt *testing.T, sh shape, md mode, sum *summary) {
	t := caseT{T: tt, sum: sum}
	t.Cleanup(func() { sum.finish(t.Name(), t.Failed()) })
	ctx, cancel := context.WithTimeout(t.Context(), caseTimeout)
	defer cancel()
	env := relaytest.NewEnvWith(tt, pg, kafkatest.Options{}, sh.ddl())
	cfg := env.Config()
	cfg.Replication.Table = sh.cfgTable
	cfg.Replication.Publication = sh.publication
	cfg.Replication.Slot = env.Slot
	if sh.slotPrefix != "" {
		cfg.Replication.Slot = sh.slotPrefix + strings.TrimPrefix(env.Slot, "slot_")
	}
	cfg.Replication.Route = route.Config{Columns: route.DefaultColumns(),
		Topic: "outbox.event.{aggregate_type}", KeyColumn: "id", PartitionBy: "aggregate_id"}
	cfg.Replication.Create = !md.dbaSlot
	if sh.configure != nil {
		sh.configure(&cfg)
	}
	slot := cfg.Replication.Slot
	dbaSetup(ctx, t, env, sh, md, slot)

	run := relaytest.Start(tt, cfg)
	if msg := waitStreaming(ctx, run); msg != "" {
		t.Fatalf("%s", msg)
	}
	w := &writer{t: t, ctx: ctx, env: env, sh: sh, nextSeq: map[string]int{},
		probe: func(target outboxrelay.LSN, wait time.Duration) delivery {
			return collect(ctx, env, run, slot, target, wait)
		}}
	w.baseStream()
	if sh.extra != nil {
		sh.extra(w)
	}
	d := collect(ctx, env, run, slot, env.CurrentLSN(ctx), settleTimeout)
	problems := append(w.problems, check(w.committed, w.rolledBack, d)...)
	if len(problems) > 0 {
		problems = append(problems, "relay: "+relayState(run)+"; "+relayCounters(run))
	}
	select {
	case <-run.Done(): // already stopped, its error is in the state above
	default:
		if err := run.Stop(); err != nil {
			problems = append(problems, fmt.Sprintf("graceful stop returned %v", err))
		}
	}
	sum.record(t.Name(), problems)
	for _, p := range problems {
		t.Error(p)
	}
}

// dbaSetup creates what a DBA would before the relay starts: the plain
// publication statement, and the slot.
func dbaSetup(ctx context.Context, t caseT, env *relaytest.Env, sh shape, md mode, slot string) {
	t.Helper()
	if md.dbaPublication {
		sql := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert')",
			pgx.Identifier{sh.publication}.Sanitize(), sh.ident())
		if _, err := env.Pool.Exec(ctx, sql); err != nil {
			t.Fatalf("DBA: %s: %v", sql, err)
		}
	}
	if md.dbaSlot {
		if _, err := env.Pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot); err != nil {
			t.Fatalf("DBA: create slot %s: %v", slot, err)
		}
	}
}

// waitStreaming returns "" once the relay streams, or why it does not.
func waitStreaming(ctx context.Context, run *relaytest.Running) string {
	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	eventually.True(rctx, 10*time.Millisecond, func() bool {
		return run.Relay.State().Ready() || isDone(run)
	})
	if isDone(run) {
		return fmt.Sprintf("relay stopped before streaming: %v", run.Err())
	}
	if st := run.Relay.State(); !st.Ready() {
		return fmt.Sprintf("relay not streaming after %s: phase %s: %s", readyTimeout, st.Phase, st.Detail)
	}
	return ""
}

func isDone(run *relaytest.Running) bool {
	select {
	case <-run.Done():
		return true
	default:
		return false
	}
}

// ident is the outbox table as an SQL identifier.
func (sh shape) ident() string { return pgx.Identifier{sh.schema, sh.table}.Sanitize() }

// leaves are the partitions' names and ranges: the first two exist from
// the start, the third is attached while the relay runs.
var leaves = []struct {
	suffix   string
	from, to time.Time
}{
	{"_2024", date(2024), date(2025)},
	{"_2025", date(2025), date(2026)},
	{"_2026", date(2026), date(2027)},
}

func date(year int) time.Time { return time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC) }

func (sh shape) leafIdent(i int) string {
	return pgx.Identifier{sh.schema, sh.table + leaves[i].suffix}.Sanitize()
}

// ddl creates the outbox table (and its schema and first two leaves).
func (sh shape) ddl() string {
	var b strings.Builder
	if sh.schema != "public" {
		fmt.Fprintf(&b, "CREATE SCHEMA %s;\n", pgx.Identifier{sh.schema}.Sanitize())
	}
	key, partitionBy := "PRIMARY KEY (id)", ""
	if sh.partitioned {
		key, partitionBy = "PRIMARY KEY (id, created_at)", " PARTITION BY RANGE (created_at)"
	}
	fmt.Fprintf(&b, `CREATE TABLE %s (
	id             %s,
	aggregate_type text        NOT NULL,
	aggregate_id   text        NOT NULL,
	event_type     text        NOT NULL,
	payload        %s NOT NULL,
	headers        jsonb,
	created_at     timestamptz NOT NULL DEFAULT now(),
	%s
)%s;
`, sh.ident(), sh.idType, sh.payloadType, key, partitionBy)
	if sh.partitioned {
		for i := range 2 {
			fmt.Fprintf(&b, "CREATE TABLE %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s');\n",
				sh.leafIdent(i), sh.ident(), leaves[i].from.Format(time.RFC3339), leaves[i].to.Format(time.RFC3339))
		}
	}
	return b.String()
}

// row is one inserted outbox row and what its record must carry.
type row struct {
	id, aggType, aggID string
	seq                int // per aggregate, in commit order; -1 for a rolled-back row
	value              []byte
}

func (r row) String() string { return fmt.Sprintf("%s (aggregate %s seq %d)", r.id, r.aggID, r.seq) }

// querier is a transaction or a connection.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// writer writes the stream and remembers what committed and what did not.
type writer struct {
	t       caseT
	ctx     context.Context
	env     *relaytest.Env
	sh      shape
	nextSeq map[string]int
	ids     int
	// pending are the kept rows of the open transaction.
	pending    []row
	committed  []row // in commit order
	rolledBack []row
	// probe waits for the slot to pass target and reads Kafka.
	probe func(target outboxrelay.LSN, wait time.Duration) delivery
	// problems are found while writing (the two-phase mid-stream check).
	problems []string
}

type fate int

const (
	kept   fate = iota
	doomed      // inserted under a savepoint or transaction that rolls back
)

// insert writes one row for aggregate agg (an index into aggregates) into
// the leaf that holds at. big, if positive, pads the payload to about that
// many bytes of random-ish text (no compression can shrink it).
func (w *writer) insert(q querier, agg int, at time.Time, f fate, big int) row {
	w.t.Helper()
	a := aggregates[agg]
	r := row{aggType: a.typ, aggID: a.id, seq: -1}
	if f == kept {
		r.seq = w.nextSeq[a.id]
		w.nextSeq[a.id]++
	}
	payload := w.payload(r, big)
	args := []any{a.typ, a.id, fmt.Sprintf("event.%d", r.seq), payload, at}
	if w.sh.idGiven {
		w.ids++
		args = append(args, fmt.Sprintf("évt:%s:%03d", a.id, w.ids))
	}
	var rendered string
	if err := q.QueryRow(w.ctx, w.sh.insertSQL(), args...).Scan(&r.id, &rendered); err != nil {
		w.t.Fatalf("insert into %s: %v", w.sh.ident(), err)
	}
	if b, ok := payload.([]byte); ok {
		r.value = b // bytea arrives as the raw bytes
	} else {
		r.value = []byte(rendered) // as Postgres renders it (jsonb normalises)
	}
	switch f {
	case kept:
		w.pending = append(w.pending, r)
	case doomed:
		w.rolledBack = append(w.rolledBack, r)
	}
	return r
}

// payload is a bytea's raw bytes or a JSON text with irregular spacing (so
// jsonb's rendering differs from the input while json keeps it).
func (w *writer) payload(r row, big int) any {
	note := "événement ✓"
	if r.seq < 0 {
		note = "rolled back: must never be delivered"
	}
	if w.sh.payloadType == "bytea" {
		return fmt.Appendf([]byte{0x00, 0xff, 0xfe}, "seq=%d aggregate=%s %s\x80\x00", r.seq, r.aggID, note)
	}
	blob := ""
	if big > 0 {
		blob = randomText(big)
	}
	return fmt.Sprintf(`{"seq":%d,  "aggregate":%q, "note": %q, "amount": 1.50, "blob": %q}`, r.seq, r.aggID, note, blob)
}

// randomText is n characters from a 64-letter alphabet, seeded: pglz finds
// no repeats to compress, so the value is stored out of line, whole.
func randomText(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	rng := rand.New(rand.NewPCG(uint64(n), 8))
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}

func (sh shape) insertSQL() string {
	payload := "$4::text::" + sh.payloadType
	if sh.payloadType == "bytea" {
		payload = "$4::bytea"
	}
	cols, vals := "aggregate_type, aggregate_id, event_type, payload, created_at", "$1, $2, $3, "+payload+", $5"
	if sh.idGiven {
		cols, vals = cols+", id", vals+", $6"
	}
	return fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s) RETURNING id::text, payload::text", sh.ident(), cols, vals)
}

// txn runs fn in a transaction that commits; its kept rows are committed.
func (w *writer) txn(fn func(tx pgx.Tx)) {
	w.t.Helper()
	w.pending = nil
	if err := pgx.BeginFunc(w.ctx, w.env.Pool, func(tx pgx.Tx) error { fn(tx); return nil }); err != nil {
		w.t.Fatalf("commit: %v", err)
	}
	w.committed = append(w.committed, w.pending...)
	w.pending = nil
}

// at is the created_at of the n-th row: alternating between the first
// leaves of a partitioned table (among all leaves once three exist).
func (w *writer) at(n, leafCount int) time.Time {
	return leaves[n%leafCount].from.Add(time.Duration(n) * time.Second)
}

// baseStream is what every shape delivers: baseTxns transactions of
// stepsPerBaseTxn rows, aggregates interleaved, every transaction touching
// both leaves of a partitioned table.
func (w *writer) baseStream() {
	n := 0
	for range baseTxns {
		w.txn(func(tx pgx.Tx) {
			for range stepsPerBaseTxn {
				w.insert(tx, n%len(aggregates), w.at(n, 2), kept, 0)
				n++
			}
		})
	}
}

// attachPartition attaches a third leaf while the relay streams, then
// writes into all three.
func attachPartition(w *writer) {
	sh := w.sh
	sql := fmt.Sprintf(`CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS);
		ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM ('%s') TO ('%s')`,
		sh.leafIdent(2), sh.ident(), sh.ident(), sh.leafIdent(2),
		leaves[2].from.Format(time.RFC3339), leaves[2].to.Format(time.RFC3339))
	if _, err := w.env.Pool.Exec(w.ctx, sql); err != nil {
		w.t.Fatalf("attach partition: %v", err)
	}
	n := 0
	for range 3 {
		w.txn(func(tx pgx.Tx) {
			for range 4 {
				w.insert(tx, n%len(aggregates), w.at(n, 3), kept, 0)
				n++
			}
		})
	}
}

// toastPayload writes a 1 MB event between two small ones of the same
// aggregate, and checks Postgres stored it whole, not compressed away.
func toastPayload(w *writer) {
	var big row
	w.txn(func(tx pgx.Tx) {
		w.insert(tx, 0, w.at(0, 1), kept, 0)
		big = w.insert(tx, 0, w.at(0, 1), kept, toastBytes)
		w.insert(tx, 1, w.at(0, 1), kept, 0)
	})
	w.txn(func(tx pgx.Tx) { w.insert(tx, 0, w.at(0, 1), kept, 0) })
	var stored int
	if err := w.env.Pool.QueryRow(w.ctx, fmt.Sprintf("SELECT pg_column_size(payload) FROM %s WHERE id::text = $1", w.sh.ident()),
		big.id).Scan(&stored); err != nil {
		w.t.Fatalf("read stored size: %v", err)
	}
	if stored < toastBytes/2 {
		w.t.Fatalf("the 1 MB payload is stored in %d bytes: compressed away, it does not test TOAST", stored)
	}
}

// savepoints writes rows under savepoints that roll back (nested, and
// after a released one), a transaction that rolls back whole, and one that
// commits with only rolled-back outbox rows.
func savepoints(w *writer) {
	exec := func(tx pgx.Tx, sql string) {
		if _, err := tx.Exec(w.ctx, sql); err != nil {
			w.t.Fatalf("%s: %v", sql, err)
		}
	}
	at := w.at(0, 1)
	w.txn(func(tx pgx.Tx) {
		w.insert(tx, 0, at, kept, 0)
		exec(tx, "SAVEPOINT a")
		w.insert(tx, 0, at, doomed, 0)
		w.insert(tx, 1, at, doomed, 0)
		exec(tx, "ROLLBACK TO SAVEPOINT a")
		w.insert(tx, 1, at, kept, 0)
		exec(tx, "SAVEPOINT b")
		w.insert(tx, 2, at, kept, 0) // released: commits with the transaction
		exec(tx, "RELEASE SAVEPOINT b")
		exec(tx, "SAVEPOINT c")
		exec(tx, "SAVEPOINT d")
		w.insert(tx, 2, at, doomed, 0) // released into c, which rolls back
		exec(tx, "RELEASE SAVEPOINT d")
		w.insert(tx, 0, at, doomed, 0)
		exec(tx, "ROLLBACK TO SAVEPOINT c")
		w.insert(tx, 0, at, kept, 0)
	})
	tx, err := w.env.Pool.Begin(w.ctx)
	if err != nil {
		w.t.Fatalf("%v", err)
	}
	for agg := range aggregates {
		w.insert(tx, agg, at, doomed, 0)
	}
	if err := tx.Rollback(w.ctx); err != nil {
		w.t.Fatalf("%v", err)
	}
	w.txn(func(tx pgx.Tx) {
		exec(tx, "SAVEPOINT lone")
		w.insert(tx, 1, at, doomed, 0)
		exec(tx, "ROLLBACK TO SAVEPOINT lone")
	})
	w.txn(func(tx pgx.Tx) {
		for agg := range aggregates {
			w.insert(tx, agg, at, kept, 0)
		}
	})
}

// twoPhase prepares a transaction, commits another while it is prepared
// (delivered first: the prepared one is decoded at COMMIT PREPARED), checks
// the prepared rows are not in Kafka yet, then commits it.
func twoPhase(w *writer) {
	gid := "schematest_" + w.env.Slot // transaction ids are cluster-wide
	w.t.Cleanup(func() {
		// Never leave it prepared: it would hold back every later slot's
		// creation on the shared server. Fails harmlessly once committed.
		_, _ = w.env.Pool.Exec(context.Background(), fmt.Sprintf("ROLLBACK PREPARED '%s'", gid))
	})
	conn, err := w.env.Pool.Acquire(w.ctx)
	if err != nil {
		w.t.Fatalf("%v", err)
	}
	w.pending = nil
	at := w.at(0, 1)
	for _, sql := range []string{"BEGIN", "", fmt.Sprintf("PREPARE TRANSACTION '%s'", gid)} {
		if sql == "" {
			for range 3 {
				w.insert(conn, 0, at, kept, 0)
				w.insert(conn, 1, at, kept, 0)
			}
			continue
		}
		if _, err := conn.Exec(w.ctx, sql); err != nil {
			conn.Release()
			w.t.Fatalf("%s: %v", sql, err)
		}
	}
	conn.Release()
	prepared := w.pending
	w.pending = nil

	w.txn(func(tx pgx.Tx) {
		for range 3 {
			w.insert(tx, 2, at, kept, 0)
		}
	})
	mid := w.probe(w.env.CurrentLSN(w.ctx), settleTimeout)
	switch {
	case !mid.reached:
		w.problems = append(w.problems, "before COMMIT PREPARED: "+mid.slotStuck())
	default:
		early := missingFrom(mid.records, prepared, true)
		if len(early) > 0 {
			w.problems = append(w.problems, fmt.Sprintf("before COMMIT PREPARED: %d of %d events of the prepared transaction already in Kafka (%s): a prepared transaction must be delivered at its commit",
				len(early), len(prepared), listSome(early)))
		}
		if late := missingFrom(mid.records, w.committed, false); len(late) > 0 {
			w.problems = append(w.problems, fmt.Sprintf("before COMMIT PREPARED: the slot confirmed %s, past the transaction committed after PREPARE, but %d of %d committed events are missing (%s)",
				mid.confirmed, len(late), len(w.committed), listSome(late)))
		}
	}
	if _, err := w.env.Pool.Exec(w.ctx, fmt.Sprintf("COMMIT PREPARED '%s'", gid)); err != nil {
		w.t.Fatalf("COMMIT PREPARED: %v", err)
	}
	w.committed = append(w.committed, prepared...)
	w.txn(func(tx pgx.Tx) {
		for agg := range aggregates {
			w.insert(tx, agg, at, kept, 0)
		}
	})
}

// missingFrom lists the rows that are (present) or are not (!present) in
// recs, matched by the id header.
func missingFrom(recs []kafkatest.Record, rows []row, present bool) []string {
	ids := map[string]bool{}
	for _, r := range recs {
		ids[r.Headers["id"]] = true
	}
	var out []string
	for _, r := range rows {
		if ids[r.id] == present {
			out = append(out, r.String())
		}
	}
	return out
}

// delivery is where the slot got and what Kafka held then.
type delivery struct {
	slot              string
	target, confirmed outboxrelay.LSN
	reached           bool
	waited            time.Duration
	records           []kafkatest.Record
	readErr           error
}

func (d delivery) slotStuck() string {
	return fmt.Sprintf("slot %s: confirmed_flush_lsn %s never reached %s (the insert LSN after the last commit) within %s",
		d.slot, d.confirmed, d.target, d.waited)
}

// collect waits (at most wait, less if the relay stops) for the slot to
// reach target, then reads every record of every topic. Once the slot is
// past target every event before it was acked, so the high watermarks
// count all of them, duplicates included.
func collect(ctx context.Context, env *relaytest.Env, run *relaytest.Running, slot string, target outboxrelay.LSN, wait time.Duration) delivery {
	d := delivery{slot: slot, target: target}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	start := time.Now()
	eventually.True(wctx, 25*time.Millisecond, func() bool {
		d.confirmed = env.Confirmed(ctx, slot)
		return d.confirmed >= target || isDone(run)
	})
	d.waited = time.Since(start).Round(time.Millisecond)
	d.reached = d.confirmed >= target

	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := kafkatest.Count(rctx, env.Kafka.Addrs(), nil)
	if err != nil {
		d.readErr = err
		return d
	}
	d.records, d.readErr = kafkatest.ReadAll(rctx, env.Kafka.Addrs(), nil, int(n))
	return d
}

// check compares what reached Kafka with what committed and rolled back.
func check(committed, rolledBack []row, d delivery) []string {
	var problems []string
	if !d.reached {
		problems = append(problems, d.slotStuck())
	}
	if d.readErr != nil {
		problems = append(problems, fmt.Sprintf("read Kafka: %v", d.readErr))
	}
	byID := make(map[string]row, len(committed))
	for _, r := range committed {
		byID[r.id] = r
	}
	gone := make(map[string]row, len(rolledBack))
	for _, r := range rolledBack {
		gone[r.id] = r
	}
	seen := map[string]int{}
	order := map[string][]int{}            // aggregate -> seqs in Kafka order
	placed := map[string]map[string]bool{} // aggregate -> topic[partition]
	var unknown, resurrected, wrong []string
	for _, rec := range d.records { // sorted by topic, partition, offset
		id := rec.Headers["id"]
		if r, ok := gone[id]; ok {
			resurrected = append(resurrected, r.String())
			continue
		}
		r, ok := byID[id]
		if !ok {
			unknown = append(unknown, fmt.Sprintf("%s[%d]@%d id header %q key %q", rec.Topic, rec.Partition, rec.Offset, id, rec.Key))
			continue
		}
		if seen[id]++; seen[id] > 1 {
			continue
		}
		order[r.aggID] = append(order[r.aggID], r.seq)
		if placed[r.aggID] == nil {
			placed[r.aggID] = map[string]bool{}
		}
		placed[r.aggID][fmt.Sprintf("%s[%d]", rec.Topic, rec.Partition)] = true
		wrong = append(wrong, recordProblems(r, rec)...)
	}

	var missing, dups []string
	want := map[string][]int{}
	for _, r := range committed {
		switch n := seen[r.id]; {
		case n == 0:
			missing = append(missing, r.String())
			continue
		case n > 1:
			dups = append(dups, fmt.Sprintf("%s ×%d", r, n))
		}
		want[r.aggID] = append(want[r.aggID], r.seq)
	}
	if len(missing) > 0 {
		how := "the slot did not pass the last commit either"
		if d.reached {
			how = fmt.Sprintf("yet the slot confirmed %s, past the last commit (%s): these events are lost, not late", d.confirmed, d.target)
		}
		problems = append(problems, fmt.Sprintf("%d of %d committed events missing from Kafka (%s); %s",
			len(missing), len(committed), listSome(missing), how))
	}
	if len(dups) > 0 {
		problems = append(problems, fmt.Sprintf("%d events delivered more than once in a clean run (%s)", len(dups), listSome(dups)))
	}
	if len(resurrected) > 0 {
		problems = append(problems, fmt.Sprintf("%d rolled-back events delivered (%s)", len(resurrected), listSome(resurrected)))
	}
	if len(unknown) > 0 {
		problems = append(problems, fmt.Sprintf("%d records match no inserted row (%s)", len(unknown), listSome(unknown)))
	}
	for _, a := range aggregates {
		if got := order[a.id]; !slices.Equal(got, want[a.id]) {
			problems = append(problems, fmt.Sprintf("aggregate %s out of order: seqs in Kafka order %v, committed order %v", a.id, got, want[a.id]))
		}
		if len(placed[a.id]) > 1 {
			problems = append(problems, fmt.Sprintf("aggregate %s spread over %v: its order is not kept", a.id, slices.Sorted(maps.Keys(placed[a.id]))))
		}
	}
	if len(wrong) > 0 {
		problems = append(problems, fmt.Sprintf("%d wrong records: %s", len(wrong), listSome(wrong)))
	}
	return problems
}

// recordProblems checks one record against its row: topic, key, the id
// header (matched already) and the payload bytes.
func recordProblems(r row, rec kafkatest.Record) []string {
	var out []string
	if want := "outbox.event." + r.aggType; rec.Topic != want {
		out = append(out, fmt.Sprintf("%s: topic %q, want %q", r, rec.Topic, want))
	}
	if string(rec.Key) != r.id {
		out = append(out, fmt.Sprintf("%s: key %q, want the id", r, rec.Key))
	}
	if string(rec.Value) != string(r.value) {
		out = append(out, fmt.Sprintf("%s: value (%d bytes) %s, want (%d bytes) %s", r, len(rec.Value), short(rec.Value), len(r.value), short(r.value)))
	}
	return out
}

func short(b []byte) string {
	if len(b) > 60 {
		return fmt.Sprintf("%q...", b[:60])
	}
	return fmt.Sprintf("%q", b)
}

// listSome shows the first few items and how many more there are.
func listSome(items []string) string {
	const n = 3
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:n], ", "), len(items)-n)
}

// relayState is the relay's phase, or how Run ended.
func relayState(run *relaytest.Running) string {
	if isDone(run) {
		return fmt.Sprintf("stopped, Run returned %v", run.Err())
	}
	st := run.Relay.State()
	if st.Detail == "" {
		return fmt.Sprintf("phase %s", st.Phase)
	}
	return fmt.Sprintf("phase %s (%s)", st.Phase, st.Detail)
}

// relayCounters are the relay's own counts, to tell "never decoded" from
// "decoded as another table" from "produced but not acked".
func relayCounters(run *relaytest.Running) string {
	otherTable := 0.0
	if mfs, err := run.Registry.Gather(); err == nil {
		for _, mf := range mfs {
			if mf.GetName() != "outbox_relay_replication_skipped_changes_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "kind" && l.GetValue() == replication.SkippedOtherTable {
						otherTable += m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	return fmt.Sprintf("it counted %.0f events received, %.0f acked, %.0f inserts skipped as another table's, %.0f reconnects",
		run.Metric("outbox_relay_events_received_total"), run.Metric("outbox_relay_events_acked_total"),
		otherTable, run.Metric("outbox_relay_reconnects_total"))
}

// caseT is a case's *testing.T whose Fatalf also records the message in
// the summary, so a case stopped early shows why in the final table.
type caseT struct {
	*testing.T
	sum *summary
}

func (t caseT) Fatalf(format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	t.sum.record(t.Name(), []string{msg})
	t.T.Fatal(msg)
}

// summary gathers every case's verdict for one table at the end.
type summary struct {
	mu      sync.Mutex
	results map[string][]string
}

func (s *summary) record(name string, problems []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.put(name, problems)
}

func (s *summary) put(name string, problems []string) {
	if s.results == nil {
		s.results = map[string][]string{}
	}
	s.results[name] = problems
}

// finish notes a case that failed without recording why (a fixture's
// t.Fatal), and one that passed.
func (s *summary) finish(name string, failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.results[name]; !ok || failed && len(s.results[name]) == 0 {
		if failed {
			s.put(name, []string{"failed: see the subtest's log"})
		} else {
			s.put(name, nil)
		}
	}
}

func (s *summary) log(t *testing.T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	passed := 0
	for _, name := range slices.Sorted(maps.Keys(s.results)) {
		problems := s.results[name]
		short := strings.TrimPrefix(name, t.Name()+"/")
		if len(problems) == 0 {
			passed++
			fmt.Fprintf(&b, "  ok   %s\n", short)
			continue
		}
		fmt.Fprintf(&b, "  FAIL %s: %s\n", short, problems[0])
	}
	t.Logf("schema matrix: %d of %d cases passed\n%s", passed, len(s.results), b.String())
}
