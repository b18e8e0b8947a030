package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
)

// The incidents scenario replays the failures of issue 11 while a writer
// commits a steady -rate events/s, as a new user would see them: the relay
// with its default settings (only -relay-args added), a relay started
// again at once after each kill -9 (as a supervisor would), Postgres
// restarted by pg_ctl. Afterwards an independent consumer reads the whole
// topic and dedupes by the id header: re-sent = records - distinct ids,
// lost = rows of the outbox table no record carries.

// step is one action of an incident's script, run in order.
type step struct {
	do    string        // write, kill, restart-fast or restart-immediate
	after time.Duration // for write: how long
}

// incident is a named script.
type incident struct {
	name, desc string
	script     []step
}

var incidents = []incident{
	{name: "kill-kill", desc: "two kill -9 of the relay, 2 s apart, during 6 s of load",
		script: []step{{"write", 2 * time.Second}, {"kill", 0}, {"write", 2 * time.Second}, {"kill", 0}, {"write", 2 * time.Second}}},
	{name: "pg-fast-immediate", desc: "a fast and an immediate Postgres restart between three 3 s load phases",
		script: []step{{"write", 3 * time.Second}, {"restart-fast", 0}, {"write", 3 * time.Second}, {"restart-immediate", 0}, {"write", 3 * time.Second}}},
	{name: "kill-pg-immediate", desc: "a kill -9 of the relay, then an immediate Postgres restart 10 s later, during 20 s of load",
		script: []step{{"write", 5 * time.Second}, {"kill", 0}, {"write", 10 * time.Second}, {"restart-immediate", 0}, {"write", 5 * time.Second}}},
}

// incidentRun is what one run of an incident delivered.
type incidentRun struct {
	written int // rows in the outbox table
	records int // records in the topic
	resent  int // records beyond the first for an id
	// perIncident splits resent by the incident that re-sent it: an
	// extra copy appended after the high watermarks read just before an
	// incident, and before those read before the next, is that
	// incident's.
	perIncident []int
	lost        int // rows no record carries
	rate        float64
	load        string
}

// incidentResult is an incident's runs, and the one with the median
// re-sent count.
type incidentResult struct {
	incident
	runs   []incidentRun
	median incidentRun
}

func (s *suite) incidentsScenario(ctx context.Context) ([]incidentResult, error) {
	var out []incidentResult
	for _, in := range incidents {
		res := incidentResult{incident: in}
		for i := range s.o.runs {
			r, err := s.runIncident(ctx, in)
			if err != nil {
				return out, fmt.Errorf("%s (run %d): %w", in.name, i+1, err)
			}
			s.logf("incidents: %s: written %d, re-sent %d %v, lost %d (%.0f events/s; load %s)", in.name, r.written, r.resent, r.perIncident, r.lost, r.rate, r.load)
			res.runs = append(res.runs, r)
		}
		sorted := slices.Clone(res.runs)
		slices.SortFunc(sorted, func(a, b incidentRun) int { return a.resent - b.resent })
		res.median = sorted[(len(sorted)-1)/2]
		out = append(out, res)
	}
	return out, nil
}

// runIncident plays in's script on a fresh database and broker and counts
// what reached the topic.
func (s *suite) runIncident(ctx context.Context, in incident) (incidentRun, error) {
	var r incidentRun
	broker, err := s.freshBroker(ctx)
	if err != nil {
		return r, err
	}
	defer broker.Close()
	db, err := s.newDatabase(ctx, in.name, 0)
	if err != nil {
		return r, err
	}
	defer db.Close(s)
	slot := db.slot(s.relay.slot, 0)
	if _, err := db.pool.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot); err != nil {
		return r, fmt.Errorf("create slot: %w", err)
	}
	p, err := s.startRelay(ctx, s.relay, db, slot, broker.Addrs(), "")
	if err != nil {
		return r, err
	}
	if err := waitReady(ctx, p); err != nil {
		_ = p.stop()
		return r, err
	}
	w := &steadyWriter{s: s, db: db}
	defer w.close(ctx)
	s.logf("incidents: %s: %s", in.name, in.desc)
	var marks []map[int32]int64 // the partitions' high watermarks before each incident
	for _, st := range in.script {
		if st.do != "write" {
			ends, err := kafkatest.EndOffsets(ctx, broker.Addrs(), []string{topic})
			if err != nil {
				_ = p.stop()
				return r, err
			}
			marks = append(marks, ends[topic])
		}
		if p, err = s.incidentStep(ctx, db, slot, broker.Addrs(), w, p, st); err != nil {
			_ = p.stop()
			return r, err
		}
	}
	r.rate = float64(w.written) / w.writing.Seconds()
	err = s.waitConfirmedAll(ctx, db, slot, p)
	if stopErr := p.stop(); err == nil {
		err = stopErr
	}
	if err != nil {
		return r, err
	}
	if err := s.countDelivered(ctx, db, broker.Addrs(), marks, &r); err != nil {
		return r, err
	}
	r.load = loadAvg()
	return r, nil
}

// incidentStep runs one step and returns the relay process now running.
func (s *suite) incidentStep(ctx context.Context, db *database, slot string, brokers []string, w *steadyWriter, p *relayProc, st step) (*relayProc, error) {
	switch st.do {
	case "write":
		return p, w.write(ctx, st.after)
	case "kill":
		s.logf("incidents: kill -9 of the relay (pid %d); starting it again", p.pid())
		_ = p.cmd.Process.Kill()
		<-p.done
		next, err := s.startRelay(ctx, s.relay, db, slot, brokers, "")
		if err != nil {
			return p, err // the killed one: stopping it is a no-op
		}
		return next, nil
	case "restart-fast", "restart-immediate":
		mode := st.do[len("restart-"):]
		s.logf("incidents: restarting Postgres (%s)", mode)
		if err := s.pg.Restart(ctx, mode); err != nil {
			return p, fmt.Errorf("restart postgres (%s): %w", mode, err)
		}
		db.pool.Reset() // its connections died with the server
		return p, nil
	}
	return p, fmt.Errorf("unknown step %q", st.do)
}

// waitConfirmedAll waits until the slot has confirmed everything written:
// the relay has then had every event acked.
func (s *suite) waitConfirmedAll(ctx context.Context, db *database, slot string, p *relayProc) error {
	var end string
	if err := db.pool.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&end); err != nil {
		return err
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var done bool
		err := db.pool.QueryRow(ctx, `SELECT coalesce(confirmed_flush_lsn >= $2::text::pg_lsn, false)
			FROM pg_replication_slots WHERE slot_name = $1`, slot, end).Scan(&done)
		if err != nil {
			return fmt.Errorf("read slot: %w", err)
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("slot %s never confirmed %s in 3 minutes; relay log: %s", slot, end, p.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return fmt.Errorf("relay exited (%v); log: %s", p.err, p.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// countDelivered reads every record of the topic with its own client and
// compares the ids with the outbox table, the ground truth (a commit cut
// off by a restart may have happened).
func (s *suite) countDelivered(ctx context.Context, db *database, brokers []string, marks []map[int32]int64, r *incidentRun) error {
	rows, err := db.pool.Query(ctx, "SELECT id::text FROM outbox")
	if err != nil {
		return err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("read outbox: %w", err)
	}
	c, err := newCounter(brokers, false)
	if err != nil {
		return err
	}
	total, err := c.count(ctx)
	c.Close()
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	recs, err := kafkatest.ReadAll(rctx, brokers, []string{topic}, int(total))
	if err != nil {
		return err
	}
	seen := make(map[string]int, len(ids))
	r.perIncident = make([]int, len(marks))
	for _, rec := range recs {
		id := rec.Headers["id"]
		if seen[id]++; seen[id] == 1 {
			continue
		}
		i := 0
		for i+1 < len(marks) && rec.Offset >= marks[i+1][rec.Partition] {
			i++
		}
		r.perIncident[i]++
	}
	r.written, r.records = len(ids), len(recs)
	for _, id := range ids {
		n := seen[id]
		if n == 0 {
			r.lost++
			continue
		}
		r.resent += n - 1
		delete(seen, id)
	}
	if len(seen) > 0 {
		return fmt.Errorf("%d ids in the topic are not in the outbox table", len(seen))
	}
	return nil
}

// steadyWriter commits -latency-tx-rows-row transactions at -rate events/s
// on one connection, as an application would (synchronous_commit on, so
// an acknowledged commit survives an immediate restart). A failed
// transaction (Postgres restarting) is dropped and the connection opened
// again; the schedule restarts from then, with no burst to catch up.
type steadyWriter struct {
	s       *suite
	db      *database
	conn    *pgx.Conn
	seq     int
	written int           // rows in acknowledged commits
	writing time.Duration // time spent in write
	failed  int
}

func (w *steadyWriter) connect(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(w.db.url)
	if err != nil {
		return err
	}
	cfg.RuntimeParams["synchronous_commit"] = "on"
	deadline := time.Now().Add(time.Minute)
	for {
		if w.conn, err = pgx.ConnectConfig(ctx, cfg); err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("writer: connect: %w", err)
		}
		time.Sleep(50 * time.Millisecond) // Postgres is restarting
	}
}

// write commits at the rate for d.
func (w *steadyWriter) write(ctx context.Context, d time.Duration) error {
	rows := w.s.o.latencyRows
	interval := time.Duration(float64(time.Second) * float64(rows) / float64(w.s.o.rate))
	padding := pad(w.s.o.payload)
	start := time.Now()
	defer func() { w.writing += time.Since(start) }()
	next := start
	for time.Since(start) < d {
		if w.conn == nil {
			if err := w.connect(ctx); err != nil {
				return err
			}
			next = time.Now()
		}
		if wait := time.Until(next); wait > 0 {
			time.Sleep(wait)
		}
		_, err := w.conn.Exec(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
			SELECT 'order', 'order-' || ((g + $2) % 1000), 'order.created', jsonb_build_object('seq', g + $2, 'pad', $3::text)
			FROM generate_series(1, $1::int) g`, rows, w.seq, padding)
		w.seq += rows
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			w.failed++
			w.conn.Close(context.WithoutCancel(ctx))
			w.conn = nil
			continue
		}
		w.written += rows
		next = next.Add(interval)
	}
	return nil
}

func (w *steadyWriter) close(ctx context.Context) {
	if w.conn != nil {
		w.conn.Close(context.WithoutCancel(ctx))
		w.conn = nil
	}
}
