package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/outbox-relay/outbox-relay/admin"
	"github.com/outbox-relay/outbox-relay/checkpoint"
)

// statusReport is what `status` prints.
type statusReport struct {
	Slot        slotView        `json:"slot"`
	Publication publicationView `json:"publication"`
	// Checkpoint is the relay's own record; nil before the relay first ran.
	Checkpoint *checkpointView `json:"checkpoint"`
	Gap        *gapView        `json:"gap"`
	Problems   []string        `json:"problems"`
}

type slotView struct {
	Name              string     `json:"name"`
	Exists            bool       `json:"exists"`
	Plugin            string     `json:"plugin,omitempty"`
	Database          string     `json:"database,omitempty"`
	Active            bool       `json:"active"`
	ActivePID         int32      `json:"active_pid,omitempty"`
	ConfirmedFlushLSN string     `json:"confirmed_flush_lsn,omitempty"`
	RestartLSN        string     `json:"restart_lsn,omitempty"`
	WALStatus         string     `json:"wal_status,omitempty"`
	SafeWALSize       *int64     `json:"safe_wal_size"`
	CurrentWALLSN     string     `json:"current_wal_lsn"`
	UnconfirmedBytes  int64      `json:"unconfirmed_bytes"`
	RetainedWALBytes  int64      `json:"retained_wal_bytes"`
	Stats             *statsView `json:"stats"`
}

type statsView struct {
	SpillTxns   int64      `json:"spill_txns"`
	SpillCount  int64      `json:"spill_count"`
	SpillBytes  int64      `json:"spill_bytes"`
	StreamTxns  int64      `json:"stream_txns"`
	StreamCount int64      `json:"stream_count"`
	StreamBytes int64      `json:"stream_bytes"`
	TotalTxns   int64      `json:"total_txns"`
	TotalBytes  int64      `json:"total_bytes"`
	StatsReset  *time.Time `json:"stats_reset"`
}

type publicationView struct {
	Name       string   `json:"name"`
	Exists     bool     `json:"exists"`
	AllTables  bool     `json:"all_tables"`
	Tables     []string `json:"tables"`
	Operations []string `json:"operations"`
}

type checkpointView struct {
	LSN       string    `json:"lsn"`
	UpdatedAt time.Time `json:"updated_at"`
	MovedBy   string    `json:"moved_by"`
}

type gapView struct {
	Kind        string `json:"kind"`
	From        string `json:"from_lsn"`
	To          string `json:"to_lsn"`
	Description string `json:"description"`
}

func newSlotView(st admin.SlotStatus) slotView {
	v := slotView{
		Name: st.Name, Exists: st.Exists, Plugin: st.Plugin, Database: st.Database,
		Active: st.Active, ActivePID: st.ActivePID,
		ConfirmedFlushLSN: lsnText(st.ConfirmedFlush), RestartLSN: lsnText(st.RestartLSN),
		WALStatus: st.WALStatus, SafeWALSize: st.SafeWALSize, CurrentWALLSN: lsnText(st.CurrentWAL),
		UnconfirmedBytes: st.UnconfirmedBytes, RetainedWALBytes: st.RetainedBytes,
	}
	if s := st.Stats; s != nil {
		v.Stats = &statsView{s.SpillTxns, s.SpillCount, s.SpillBytes, s.StreamTxns, s.StreamCount, s.StreamBytes, s.TotalTxns, s.TotalBytes, s.StatsReset}
	}
	return v
}

func runStatus(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, conn, err := opsCommand(ctx, "status", args, getenv, stderr, nil)
	if conn == nil {
		return err
	}
	defer closeConn(conn)

	st, err := admin.ReadStatus(ctx, conn, o.pg)
	if err != nil {
		return err
	}
	r := newStatusReport(st)
	err = emit(o, stdout, r, func(w io.Writer) { printStatus(w, r) })
	if err == nil && len(r.Problems) > 0 {
		return fmt.Errorf("status: %w: %s", errProblems, strings.Join(r.Problems, "; "))
	}
	return err
}

func newStatusReport(st admin.Status) statusReport {
	p := st.Publication
	r := statusReport{
		Slot:        newSlotView(st.Slot),
		Publication: publicationView{Name: p.Name, Exists: p.Exists, AllTables: p.AllTables, Tables: p.Tables, Operations: p.Operations},
		Problems:    st.Problems,
	}
	if st.HasRecord {
		r.Checkpoint = &checkpointView{LSN: lsnText(st.Record.LSN), UpdatedAt: st.Record.UpdatedAt, MovedBy: st.Record.MovedBy}
	}
	if g := st.Gap; g != nil {
		r.Gap = &gapView{Kind: g.Kind, From: lsnText(g.From), To: lsnText(g.To), Description: g.Describe()}
	}
	return r
}

func printStatus(w io.Writer, r statusReport) {
	s := r.Slot
	fmt.Fprintf(w, "SLOT\t%s\n", s.Name)
	if !s.Exists {
		fmt.Fprintf(w, "  exists\tno\n")
	} else {
		active := "no"
		if s.Active {
			active = fmt.Sprintf("yes (pid %d)", s.ActivePID)
		}
		safe := "unlimited (max_slot_wal_keep_size = -1)"
		if s.SafeWALSize != nil {
			safe = bytesText(*s.SafeWALSize)
		}
		fmt.Fprintf(w, "  plugin\t%s\n  database\t%s\n  active\t%s\n", s.Plugin, s.Database, active)
		fmt.Fprintf(w, "  confirmed_flush_lsn\t%s\n  restart_lsn\t%s\n", orDash(s.ConfirmedFlushLSN), orDash(s.RestartLSN))
		fmt.Fprintf(w, "  wal_status\t%s\n  safe_wal_size\t%s\n", orDash(s.WALStatus), safe)
	}
	fmt.Fprintf(w, "SERVER\t\n  current_wal_lsn\t%s\n", s.CurrentWALLSN)
	if s.Exists {
		fmt.Fprintf(w, "  not yet confirmed\t%s\n  WAL retained by the slot\t%s\n", bytesText(s.UnconfirmedBytes), bytesText(s.RetainedWALBytes))
	}
	if st := s.Stats; st != nil {
		fmt.Fprintf(w, "DECODING\t(pg_stat_replication_slots)\n")
		fmt.Fprintf(w, "  spilled to disk\t%d txns, %d times, %s\n", st.SpillTxns, st.SpillCount, bytesText(st.SpillBytes))
		fmt.Fprintf(w, "  streamed\t%d txns, %d times, %s\n", st.StreamTxns, st.StreamCount, bytesText(st.StreamBytes))
		fmt.Fprintf(w, "  decoded\t%d txns, %s\n", st.TotalTxns, bytesText(st.TotalBytes))
	}
	p := r.Publication
	fmt.Fprintf(w, "PUBLICATION\t%s\n", p.Name)
	if !p.Exists {
		fmt.Fprintf(w, "  exists\tno\n")
	} else {
		tables := strings.Join(p.Tables, ", ")
		if p.AllTables {
			tables = "all tables"
		}
		fmt.Fprintf(w, "  tables\t%s\n  publishes\t%s\n", orDash(tables), orDash(strings.Join(p.Operations, ", ")))
	}
	fmt.Fprintf(w, "RELAY CHECKPOINT\t(%s)\n", checkpoint.Table)
	if c := r.Checkpoint; c == nil {
		fmt.Fprintf(w, "  lsn\tnone recorded yet (the relay records it once it streams)\n")
	} else {
		fmt.Fprintf(w, "  lsn\t%s\n  updated_at\t%s\n  moved_by\t%s\n", c.LSN, c.UpdatedAt.UTC().Format(time.RFC3339), c.MovedBy)
	}
	if len(r.Problems) == 0 {
		fmt.Fprintf(w, "PROBLEMS\tnone\n")
		return
	}
	fmt.Fprintf(w, "PROBLEMS\t\n")
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  - %s\n", p)
	}
}

type checkView struct {
	Name   string `json:"name"`
	Status string `json:"status"` // ok, warn or fail
	Detail string `json:"detail,omitempty"`
	Fix    string `json:"fix,omitempty"`
}

type preflightReport struct {
	CanStart bool        `json:"can_start"`
	Checks   []checkView `json:"checks"`
}

func runPreflight(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, conn, err := opsCommand(ctx, "preflight", args, getenv, stderr, func(fs *flag.FlagSet, o *options) {
		fs.BoolVar(&o.pg.Create, "create-missing", o.pg.Create, "the relay will create a missing publication and slot (as `run` does)")
		fs.DurationVar(&o.pg.StatusInterval, "status-interval", o.pg.StatusInterval, "the relay's status interval, checked against wal_sender_timeout")
	})
	if conn == nil {
		return err
	}
	defer closeConn(conn)

	in, err := admin.Readiness(ctx, conn, o.pg)
	if err != nil {
		return err
	}
	r := preflightReport{CanStart: in.Err() == nil}
	for _, c := range in.Checks {
		v := checkView{Name: c.Name, Status: "ok"}
		switch {
		case !c.OK && c.Warning:
			v.Status, v.Detail, v.Fix = "warn", c.Detail, c.Fix
		case !c.OK:
			v.Status, v.Detail, v.Fix = "fail", c.Detail, c.Fix
		}
		r.Checks = append(r.Checks, v)
	}
	err = emit(o, stdout, r, func(w io.Writer) {
		fmt.Fprintln(w, "STATUS\tCHECK\tDETAIL / FIX")
		for _, c := range r.Checks {
			fmt.Fprintf(w, "%s\t%s\t%s\n", strings.ToUpper(c.Status), c.Name, c.Detail)
			if c.Fix != "" {
				fmt.Fprintf(w, "\t\tfix: %s\n", c.Fix)
			}
		}
		if r.CanStart {
			fmt.Fprintln(w, "\nThe relay can start.")
		} else {
			fmt.Fprintln(w, "\nThe relay cannot start: apply the fixes above.")
		}
	})
	if err == nil && !r.CanStart {
		return fmt.Errorf("preflight: %w: %v", errProblems, in.Err())
	}
	return err
}

type setupReport struct {
	Actions []string `json:"actions"`
}

func runSetup(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var printSQL bool
	o, err := opsFlags("setup", args, getenv, stderr, func(fs *flag.FlagSet, o *options) {
		fs.BoolVar(&printSQL, "print-sql", false, "only print the SQL for a DBA; connect to nothing")
	})
	if o == nil {
		return err
	}
	if printSQL {
		fmt.Fprintf(stdout, "-- outbox-relay setup for slot %q: run in the application's database, in this order.\n", o.pg.Slot)
		fmt.Fprintln(stdout, "-- 1. The publication (before the slot: a slot only sees publications older than its position).")
		fmt.Fprintln(stdout, admin.CreatePublicationSQL(o.pg))
		fmt.Fprintln(stdout, "-- 2. The slot (needs REPLICATION or rds_replication).")
		fmt.Fprintln(stdout, admin.CreateSlotSQL(o.pg))
		fmt.Fprintln(stdout, "-- 3. The relay's checkpoint record (grant the relay's role SELECT, INSERT, UPDATE, DELETE on it).")
		fmt.Fprintln(stdout, checkpoint.TableSQL)
		return nil
	}
	conn, err := opsConnect(ctx, o)
	if err != nil {
		return err
	}
	defer closeConn(conn)

	res, err := admin.SetUp(ctx, conn, o.pg)
	if err != nil {
		return err
	}
	r := setupReport{Actions: res.Actions}
	problems := res.Problems
	err = emit(o, stdout, r, func(w io.Writer) {
		for _, a := range r.Actions {
			fmt.Fprintln(w, a)
		}
	})
	if err == nil && len(problems) > 0 {
		return fmt.Errorf("setup: %w: %s", errProblems, strings.Join(problems, "; "))
	}
	return err
}
