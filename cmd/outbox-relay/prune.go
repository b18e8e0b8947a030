package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/outbox-relay/outbox-relay/admin"
)

// age is a duration flag that also takes whole days ("7d", "1d12h"):
// retention policies are written in days, and time.ParseDuration stops at
// hours.
type age struct{ d *time.Duration }

func (a age) String() string {
	if a.d == nil || *a.d == 0 {
		return "0s"
	}
	return a.d.String()
}

func (a age) Set(s string) error {
	d, err := parseAge(s)
	if err != nil {
		return err
	}
	*a.d = d
	return nil
}

// parseAge reads a Go duration with an optional leading whole-day part.
func parseAge(s string) (time.Duration, error) {
	days, rest, found := strings.Cut(s, "d")
	if !found {
		return time.ParseDuration(s)
	}
	n, err := strconv.Atoi(days)
	if err != nil || n < 0 || n > 100000 {
		return 0, fmt.Errorf("%q: write a duration like 168h, 7d or 1d12h", s)
	}
	d := time.Duration(n) * 24 * time.Hour
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("%q: write a duration like 168h, 7d or 1d12h", s)
		}
		d += r
	}
	return d, nil
}

type pruneReport struct {
	Table      string    `json:"table"`
	Column     string    `json:"column"`
	Horizon    time.Time `json:"horizon"`
	DryRun     bool      `json:"dry_run"`
	Applied    bool      `json:"applied"`
	Candidates int64     `json:"candidates"`
	Deleted    int64     `json:"deleted"`
	Batches    []int64   `json:"batches"`
	Seconds    float64   `json:"duration_seconds"`
}

// pruneFlags registers prune's own flags into cfg.
func pruneFlags(fs *flag.FlagSet, cfg *admin.PruneConfig) {
	fs.Var(age{&cfg.OlderThan}, "older-than", "delete rows created longer ago than this (e.g. 168h or 7d; required)")
	fs.StringVar(&cfg.Column, "created-at-column", cfg.Column, "timestamptz, timestamp or date column holding each row's creation time (it needs an index)")
	fs.IntVar(&cfg.Batch, "batch", cfg.Batch, "rows per DELETE (each its own short transaction)")
	fs.DurationVar(&cfg.Pause, "pause", cfg.Pause, "wait between two batches, so vacuum and replicas keep up")
	fs.BoolVar(&cfg.AllowSeqscan, "allow-seqscan", false, "prune even without an index on --created-at-column (every batch scans the table)")
}

func runPrune(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := admin.PruneConfig{Column: "created_at", Batch: admin.DefaultPruneBatch, Pause: admin.DefaultPrunePause}
	var dryRun, yes bool
	o, err := opsFlags("prune", args, getenv, stderr, func(fs *flag.FlagSet, o *options) {
		pruneFlags(fs, &cfg)
		fs.BoolVar(&dryRun, "dry-run", false, "only count the rows that would be deleted")
		fs.BoolVar(&yes, "yes", false, "really delete (without it, only print how many rows would go)")
	})
	if o == nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	conn, err := opsConnect(ctx, o)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	cfg.Table = o.pg.TableName()
	plan, err := admin.PlanPrune(ctx, conn, cfg)
	if err != nil {
		return err
	}
	r := pruneReport{Table: cfg.Table.String(), Column: cfg.Column, Horizon: plan.Horizon, DryRun: dryRun, Candidates: plan.Candidates, Batches: []int64{}}
	if dryRun || !yes {
		if err := emit(o, stdout, r, func(w io.Writer) { printPrune(w, r) }); err != nil || dryRun {
			return err
		}
		return errNeedYes
	}
	res, err := admin.Prune(ctx, conn, cfg, plan.Horizon, func(b admin.PruneBatch) {
		fmt.Fprintf(stderr, "prune: batch %d deleted %d row(s), %d of %d so far\n", b.N, b.Rows, b.Deleted, plan.Candidates)
	})
	r.Applied, r.Deleted, r.Batches, r.Seconds = err == nil, res.Deleted, res.Batches, res.Duration.Seconds()
	if perr := emit(o, stdout, r, func(w io.Writer) { printPrune(w, r) }); err == nil {
		err = perr
	}
	return err
}

func printPrune(w io.Writer, r pruneReport) {
	horizon := r.Horizon.UTC().Format(time.RFC3339)
	switch {
	case r.Applied:
		fmt.Fprintf(w, "Deleted %d row(s) of %s created before %s (by %s), in %d batch(es), in %s.\n",
			r.Deleted, r.Table, horizon, r.Column, len(r.Batches), time.Duration(r.Seconds*float64(time.Second)).Round(time.Millisecond))
	case r.Seconds > 0:
		fmt.Fprintf(w, "Stopped after deleting %d row(s) of %s created before %s, in %d batch(es).\n", r.Deleted, r.Table, horizon, len(r.Batches))
	case r.DryRun:
		fmt.Fprintf(w, "Dry run: %d row(s) of %s were created before %s (by %s); nothing deleted.\n", r.Candidates, r.Table, horizon, r.Column)
	default:
		fmt.Fprintf(w, "Would delete %d row(s) of %s created before %s (by %s).\n", r.Candidates, r.Table, horizon, r.Column)
	}
}
