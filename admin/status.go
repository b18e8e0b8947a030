package admin

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/checkpoint"
	"github.com/outbox-relay/outbox-relay/replication"
)

// Publication is a publication as `status` shows it.
type Publication struct {
	Name       string
	Exists     bool
	AllTables  bool
	Tables     []string
	Operations []string
}

// Status is what `outbox-relay status` reports: the facts, and the
// problems judged from them.
type Status struct {
	Slot        SlotStatus
	Publication Publication
	// Record is the relay's durable record; HasRecord is false before the
	// relay first ran.
	Record    checkpoint.Record
	HasRecord bool
	Gap       *checkpoint.Gap
	Problems  []string
}

// ReadStatus gathers the slot, the publication and the record of cfg.
func ReadStatus(ctx context.Context, conn *pgx.Conn, cfg replication.Config) (Status, error) {
	var s Status
	var err error
	// The slot before the record: see checkpoint.DetectGap.
	if s.Slot, err = ReadSlotStatus(ctx, conn, cfg.Slot); err != nil {
		return s, err
	}
	if s.Record, s.HasRecord, err = checkpoint.Read(ctx, conn, cfg.Slot); err != nil {
		return s, err
	}
	if s.Publication, err = readPublication(ctx, conn, cfg.Publication); err != nil {
		return s, err
	}
	checks, err := PublicationChecks(ctx, conn, cfg)
	if err != nil {
		return s, err
	}
	s.Gap = checkpoint.DetectGap(cfg.Slot, s.Slot.Info(), s.Record, s.HasRecord, s.Slot.CurrentWAL)
	s.Problems = statusProblems(cfg.Slot, s.Slot, s.Gap, checks)
	if reason, halted := s.Record.Halted(); halted && s.HasRecord {
		s.Problems = append(s.Problems, "the relay halted and refuses to start until --accept-gap: "+reason)
	}
	return s, nil
}

// statusProblems judges the facts: each problem names its fix.
func statusProblems(slot string, st SlotStatus, gap *checkpoint.Gap, checks []Check) []string {
	problems := []string{}
	if gap != nil {
		problems = append(problems, "gap: "+gap.Describe()+"; see docs/operations.md, 'Gap report'")
	}
	switch {
	case !st.Exists:
		problems = append(problems, fmt.Sprintf("slot %q does not exist (create it with: outbox-relay setup)", slot))
	case st.Plugin != "pgoutput":
		problems = append(problems, fmt.Sprintf("slot %q uses plugin %q, not pgoutput", slot, st.Plugin))
	case st.WALStatus == "unreserved":
		problems = append(problems, "slot wal_status is 'unreserved': it is about to be lost (max_slot_wal_keep_size); see docs/operations.md, 'WAL growing'")
	}
	for _, c := range checks {
		if !c.OK && !c.Warning {
			problems = append(problems, c.Detail+" ("+c.Fix+")")
		}
	}
	return problems
}

func readPublication(ctx context.Context, conn *pgx.Conn, name string) (Publication, error) {
	p := Publication{Name: name, Tables: []string{}, Operations: []string{}}
	var ins, upd, del, trunc bool
	err := conn.QueryRow(ctx, "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = $1",
		name).Scan(&p.AllTables, &ins, &upd, &del, &trunc)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("read publication %q: %w", name, err)
	}
	p.Exists = true
	for _, op := range []struct {
		on   bool
		name string
	}{{ins, "insert"}, {upd, "update"}, {del, "delete"}, {trunc, "truncate"}} {
		if op.on {
			p.Operations = append(p.Operations, op.name)
		}
	}
	rows, err := conn.Query(ctx, "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1", name)
	if err != nil {
		return p, fmt.Errorf("read publication tables: %w", err)
	}
	if p.Tables, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return p, fmt.Errorf("read publication tables: %w", err)
	}
	return p, nil
}

// Readiness is preflight as `outbox-relay preflight` runs it: the server,
// table, publication and slot checks, and the checkpoint table's.
func Readiness(ctx context.Context, conn *pgx.Conn, cfg replication.Config) (Inspection, error) {
	in, err := Preflight(ctx, conn, cfg)
	if err != nil {
		return in, err
	}
	cp, err := CheckpointCheck(ctx, conn)
	if err != nil {
		return in, err
	}
	in.Checks = append(in.Checks, cp)
	return in, nil
}

// SetupResult is what SetUp did, and what it could not fix.
type SetupResult struct {
	Actions  []string
	Problems []string
}

// SetUp creates what the relay needs and is missing: the publication,
// the slot, the checkpoint table and the slot's first record. It is what
// `outbox-relay setup` runs; idempotent.
func SetUp(ctx context.Context, conn *pgx.Conn, cfg replication.Config) (SetupResult, error) {
	r := SetupResult{Actions: []string{}}
	cfg.Create = true
	in, err := Preflight(ctx, conn, cfg)
	if err != nil {
		return r, err
	}
	created, err := Setup(ctx, conn, cfg, in)
	if err != nil {
		return r, err
	}
	for _, c := range created {
		r.Actions = append(r.Actions, "created "+c)
	}
	if in.PublicationExists {
		r.Actions = append(r.Actions, "publication "+cfg.Publication+" already exists")
	}
	if in.Slot.Exists {
		r.Actions = append(r.Actions, "slot "+cfg.Slot+" already exists")
	}
	gap, action, err := recordSetUp(ctx, conn, cfg.Slot)
	if err != nil {
		return r, err
	}
	r.Actions = append(r.Actions, action)
	if gap != nil {
		r.Problems = append(r.Problems, "gap: "+gap.Describe())
	}
	for _, c := range in.Failed() {
		// Setup has just created what these checks found missing.
		if c.Name != "publication" && c.Name != "slot" && c.Name != "max_replication_slots" && c.Name != "publication rights" {
			r.Problems = append(r.Problems, c.Detail+"; "+c.Fix)
		}
	}
	return r, nil
}

// recordSetUp creates the checkpoint table and adopts the slot's position
// as the first record.
func recordSetUp(ctx context.Context, conn *pgx.Conn, slotName string) (*checkpoint.Gap, string, error) {
	if err := checkpoint.EnsureTable(ctx, conn); err != nil {
		return nil, "", err
	}
	slot, err := checkpoint.ReadSlot(ctx, conn, slotName)
	if err != nil {
		return nil, "", err
	}
	rec, hasRec, err := checkpoint.Read(ctx, conn, slotName)
	if err != nil {
		return nil, "", err
	}
	gap := checkpoint.DetectGap(slotName, slot, rec, hasRec, slot.ConfirmedFlush)
	if hasRec {
		return gap, fmt.Sprintf("checkpoint record exists at %s (moved by %s)", rec.LSN, rec.MovedBy), nil
	}
	if err := checkpoint.Adopt(ctx, conn, slotName, slot.ConfirmedFlush, checkpoint.MovedBySetup); err != nil {
		return gap, "", err
	}
	return gap, fmt.Sprintf("recorded checkpoint %s", slot.ConfirmedFlush), nil
}
