package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/outbox-relay/outbox-relay/checkpoint"
	"github.com/outbox-relay/outbox-relay/replay"
)

// timeFlag reads an RFC 3339 time (or a date, midnight UTC).
type timeFlag struct{ t *time.Time }

func (f timeFlag) String() string {
	if f.t == nil || f.t.IsZero() {
		return ""
	}
	return f.t.Format(time.RFC3339Nano)
}

func (f timeFlag) Set(s string) error {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			*f.t = t
			return nil
		}
	}
	return fmt.Errorf("%q: write a time like 2026-01-02T15:04:05Z (RFC 3339) or a date like 2026-01-02", s)
}

// listFlag collects a repeated flag (also comma-separated).
type listFlag struct{ l *[]string }

func (f listFlag) String() string {
	if f.l == nil {
		return ""
	}
	return strings.Join(*f.l, ",")
}

func (f listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*f.l = append(*f.l, v)
		}
	}
	return nil
}

type replayReport struct {
	Since   time.Time      `json:"since"`
	Until   *time.Time     `json:"until"`
	DryRun  bool           `json:"dry_run"`
	Applied bool           `json:"applied"`
	Rows    int            `json:"rows"`
	Bytes   int64          `json:"bytes"`
	Topics  map[string]int `json:"topics"`
}

// replayFlags registers replay's flags beyond the connection, table and
// routing ones.
func replayFlags(fs *flag.FlagSet, o *options, f *replay.Filter, dryRun, yes *bool) {
	o.registerKafka(fs)
	fs.Var(timeFlag{&f.Since}, "since", "re-publish rows created at or after this time (RFC 3339, e.g. 2026-01-02T15:04:05Z; required)")
	fs.Var(timeFlag{&f.Until}, "until", "and before this time; empty: no end")
	fs.StringVar(&f.CreatedAt, "created-at-column", f.CreatedAt, "column holding each row's creation time: the window and the order")
	fs.StringVar(&f.AggregateType, "aggregate-type", "", "only rows of this aggregate type")
	fs.StringVar(&f.AggregateID, "aggregate-id", "", "only rows of this aggregate id")
	fs.Var(listFlag{&f.IDs}, "id", "only these event ids (repeat the flag or separate with commas)")
	fs.BoolVar(dryRun, "dry-run", false, "only map the rows and print what would be sent")
	fs.BoolVar(yes, "yes", false, "really produce (without it, only print what would be sent)")
}

func runReplay(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	f := replay.Filter{CreatedAt: "created_at"}
	var dryRun, yes bool
	o, err := opsFlags("replay", args, getenv, stderr, func(fs *flag.FlagSet, o *options) {
		replayFlags(fs, o, &f, &dryRun, &yes)
	})
	if o == nil {
		return err
	}
	if err := f.Validate(); err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	keys, err := o.sealKeys()
	if err != nil {
		return err
	}
	conn, err := opsConnect(ctx, o)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	r := replayReport{Since: f.Since, DryRun: dryRun}
	if !f.Until.IsZero() {
		r.Until = &f.Until
	}
	var s replay.Summary
	if dryRun || !yes {
		s, err = replay.Plan(ctx, conn, o.pg, f)
	} else {
		if err := o.kafka.Validate(); err != nil {
			return nameFields(err, o)
		}
		s, err = replay.Publish(ctx, conn, o.pg, o.kafka, f, keys, func(acked int) {
			if acked%1000 == 0 {
				fmt.Fprintf(stderr, "replay: %d record(s) acked\n", acked)
			}
		})
		r.Applied = err == nil
	}
	r.Rows, r.Bytes, r.Topics = s.Rows, s.Bytes, s.Topics
	if r.Topics == nil {
		r.Topics = map[string]int{}
	}
	if perr := emit(o, stdout, r, func(w io.Writer) { printReplay(w, r) }); err == nil {
		err = perr
	}
	if err == nil && !dryRun && !yes {
		return errNeedYes
	}
	return err
}

func printReplay(w io.Writer, r replayReport) {
	until := "now"
	if r.Until != nil {
		until = r.Until.UTC().Format(time.RFC3339Nano)
	}
	verb := "Would re-publish"
	if r.Applied {
		verb = "Re-published"
	}
	fmt.Fprintf(w, "%s %d event(s), %s, created from %s to %s, with header %s=true:\n",
		verb, r.Rows, bytesText(r.Bytes), r.Since.UTC().Format(time.RFC3339Nano), until, replay.Header)
	topics := make([]string, 0, len(r.Topics))
	for t := range r.Topics {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	fmt.Fprintln(w, "TOPIC\tEVENTS")
	for _, t := range topics {
		fmt.Fprintf(w, "%s\t%d\n", t, r.Topics[t])
	}
}

// secretFlags are never printed: a command that needs one names its
// environment variable instead.
var secretFlags = map[string]bool{"pg-url": true, "kafka-sasl-password": true}

// replayHint adds to a gap report the replay command that re-publishes the
// gap, with the flags the relay was given on the command line that replay
// shares (the environment and --config file apply to both alike).
type replayHint struct {
	err     error
	command string
}

func (h *replayHint) Error() string {
	return h.err.Error() + "\nre-publish the gap's events with:\n  " + h.command
}

func (h *replayHint) Unwrap() error { return h.err }

func withReplayCommand(err error, o *options) error {
	var ge *checkpoint.GapError
	if !errors.As(err, &ge) {
		return err
	}
	args := ge.Gap.ReplayArgs()
	if args == nil {
		return err
	}
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	ro := newOptions()
	ro.registerPG(fs)
	var f replay.Filter
	var dry, yes bool
	replayFlags(fs, ro, &f, &dry, &yes)
	names := make([]string, 0, len(o.cmdline))
	for n := range o.cmdline {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if fs.Lookup(n) == nil || consentFlags[n] || o.flags.Lookup(n) == nil {
			continue
		}
		v := shellQuote(o.flags.Lookup(n).Value.String())
		if secretFlags[n] {
			v = `"$` + envName(n) + `"`
		}
		args = append(args, "--"+n, v)
	}
	return &replayHint{err: err, command: "outbox-relay " + strings.Join(args, " ") + " --yes"}
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:,=@%+-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
