package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// errProblems is returned by an operator command that printed its report
// and found something wrong: main exits non-zero.
var errProblems = errors.New("problems found")

// opsCommand parses an operator command's flags (the connection flags,
// --output, and what extra registers) and connects. A nil conn with a nil
// error means --help was printed.
func opsCommand(ctx context.Context, name string, args []string, getenv func(string) string, stderr io.Writer,
	extra func(fs *flag.FlagSet, o *options)) (*options, *pgx.Conn, error) {
	o, err := opsFlags(name, args, getenv, stderr, extra)
	if o == nil {
		return nil, nil, err
	}
	conn, err := opsConnect(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	return o, conn, nil
}

// opsFlags parses the flags; a nil options with a nil error means --help.
func opsFlags(name string, args []string, getenv func(string) string, stderr io.Writer,
	extra func(fs *flag.FlagSet, o *options)) (*options, error) {
	o := newOptions()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	o.registerPG(fs)
	o.registerOutput(fs)
	if extra != nil {
		extra(fs, o)
	}
	if err := parse(fs, o, args, getenv, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil
		}
		return nil, err
	}
	if o.output != "table" && o.output != "json" {
		return nil, fmt.Errorf("--output %q: use table or json", o.output)
	}
	return o, nil
}

func opsConnect(ctx context.Context, o *options) (*pgx.Conn, error) {
	if err := o.finish(); err != nil {
		return nil, err
	}
	if err := o.pg.Validate(); err != nil {
		return nil, nameFields(err, o)
	}
	conn, err := pgx.Connect(ctx, o.pg.ConnString)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	return conn, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn.Close(ctx)
}

// emit prints v as indented JSON with --output json, else the table.
func emit(o *options, w io.Writer, v any, table func(tw io.Writer)) error {
	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// lsnText formats an LSN for people and scripts alike ("0/16B3748"); an
// unknown position is empty.
func lsnText(l outboxrelay.LSN) string {
	if l == 0 {
		return ""
	}
	return l.String()
}

// bytesText is a byte count with a readable unit.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit || m <= -unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB (%d bytes)", float64(n)/float64(div), "KMGTPE"[exp], n)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
