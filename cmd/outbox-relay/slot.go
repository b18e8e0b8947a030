package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/outbox-relay/outbox-relay/admin"
	"github.com/outbox-relay/outbox-relay/checkpoint"
)

type eventView struct {
	ID           string    `json:"id"`
	LSN          string    `json:"lsn"`
	CommitLSN    string    `json:"commit_lsn"`
	CommitEndLSN string    `json:"commit_end_lsn"`
	CommitTime   time.Time `json:"commit_time"`
	Topic        string    `json:"topic"`
	Key          string    `json:"key"`
	Error        string    `json:"error,omitempty"`
}

func eventViews(evs []admin.PendingEvent) []eventView {
	out := make([]eventView, len(evs))
	for i, e := range evs {
		out[i] = eventView{
			ID: e.ID, LSN: lsnText(e.LSN), CommitLSN: lsnText(e.CommitLSN), CommitEndLSN: lsnText(e.CommitEnd),
			CommitTime: e.CommitTime, Topic: e.Topic, Key: e.Key, Error: e.Error,
		}
	}
	return out
}

func printEvents(w io.Writer, evs []eventView) {
	fmt.Fprintln(w, "EVENT ID\tLSN\tCOMMIT TIME\tTOPIC\tKEY\tPROBLEM")
	for _, e := range evs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.LSN, e.CommitTime.UTC().Format(time.RFC3339Nano), orDash(e.Topic), orDash(e.Key), orDash(e.Error))
	}
}

type peekReport struct {
	Slot              string      `json:"slot"`
	ConfirmedFlushLSN string      `json:"confirmed_flush_lsn"`
	Limit             int         `json:"limit"`
	LimitReached      bool        `json:"limit_reached"`
	Events            []eventView `json:"events"`
}

func runSlotPeek(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var limit int
	o, conn, err := opsCommand(ctx, "slot peek", args, getenv, stderr, func(fs *flag.FlagSet, o *options) {
		fs.IntVar(&limit, "limit", 100, "list at most this many events; 0 lists all (decoding a long backlog takes a while)")
	})
	if conn == nil {
		return err
	}
	defer closeConn(conn)
	if limit < 0 {
		return fmt.Errorf("--limit %d: use 0 (all) or a positive count", limit)
	}
	slot, err := checkpoint.ReadSlot(ctx, conn, o.pg.Slot)
	if err != nil {
		return err
	}
	evs, err := admin.Peek(ctx, conn, o.pg, limit)
	if err != nil {
		return err
	}
	r := peekReport{
		Slot: o.pg.Slot, ConfirmedFlushLSN: lsnText(slot.ConfirmedFlush), Limit: limit,
		LimitReached: limit > 0 && len(evs) == limit, Events: eventViews(evs),
	}
	return emit(o, stdout, r, func(w io.Writer) {
		fmt.Fprintf(w, "Slot %s, confirmed up to %s: %d pending event(s), in the order a restart sends them.\n", r.Slot, r.ConfirmedFlushLSN, len(r.Events))
		if r.LimitReached {
			fmt.Fprintf(w, "(stopped at --limit %d; there may be more)\n", limit)
		}
		printEvents(w, r.Events)
	})
}

type moveReport struct {
	Slot    string      `json:"slot"`
	From    string      `json:"from_lsn"`
	To      string      `json:"to_lsn"`
	Applied bool        `json:"applied"`
	Skipped []eventView `json:"skipped"`
}

// errNeedYes refuses a slot move the operator has not confirmed.
var errNeedYes = errors.New("nothing changed: add --yes to do it")

func printMove(w io.Writer, r moveReport) {
	verb := "would skip"
	if r.Applied {
		verb = "skipped"
	}
	fmt.Fprintf(w, "Slot %s: %s -> %s; %s %d event(s), never to be sent:\n", r.Slot, r.From, r.To, verb, len(r.Skipped))
	printEvents(w, r.Skipped)
}

func runSlotAdvance(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var to string
	var yes bool
	o, conn, err := opsCommand(ctx, "slot advance", args, getenv, stderr, func(fs *flag.FlagSet, o *options) {
		fs.StringVar(&to, "to", "", "move the slot's confirmed position to this LSN (e.g. 0/16B3748); transactions committed before it are skipped")
		fs.BoolVar(&yes, "yes", false, "really move the slot (without it, only print what would be skipped)")
	})
	if conn == nil {
		return err
	}
	defer closeConn(conn)
	target, err := pglogrepl.ParseLSN(to)
	if err != nil || to == "" {
		return fmt.Errorf("--to %q: give an LSN like 0/16B3748 (outbox-relay slot peek lists them)", to)
	}
	slot, err := admin.CheckAdvance(ctx, conn, o.pg.Slot, target)
	if err != nil {
		return err
	}
	skipped, err := admin.PeekUpTo(ctx, conn, o.pg, target)
	if err != nil {
		return err
	}
	r := moveReport{Slot: o.pg.Slot, From: lsnText(slot.ConfirmedFlush), To: lsnText(target), Skipped: eventViews(skipped)}
	return move(o, stdout, r, yes, func() (string, error) {
		end, err := admin.AdvanceSlot(ctx, conn, o.pg.Slot, target, checkpoint.MovedByAdvance)
		return lsnText(end), err
	})
}

func runSlotSkip(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var id string
	var yes, whole bool
	o, conn, err := opsCommand(ctx, "slot skip", args, getenv, stderr, func(fs *flag.FlagSet, o *options) {
		fs.StringVar(&id, "event", "", "id of the pending event to skip (the relay's error names it)")
		fs.BoolVar(&whole, "whole-transaction", false, "also skip the other events of its transaction (a slot cannot resume inside one)")
		fs.BoolVar(&yes, "yes", false, "really move the slot (without it, only print what would be skipped)")
	})
	if conn == nil {
		return err
	}
	defer closeConn(conn)
	if id == "" {
		return errors.New("--event is required: the id of the event to skip")
	}
	slot, err := checkpoint.ReadSlot(ctx, conn, o.pg.Slot)
	if err != nil {
		return err
	}
	pending, found, err := admin.FindPending(ctx, conn, o.pg, id)
	if err != nil {
		return err
	}
	if !found {
		pending = nil
	}
	skipped, target, err := admin.PlanSkip(pending, id, whole)
	if err != nil {
		return err
	}
	r := moveReport{Slot: o.pg.Slot, From: lsnText(slot.ConfirmedFlush), To: lsnText(target), Skipped: eventViews(skipped)}
	return move(o, stdout, r, yes, func() (string, error) {
		end, err := admin.AdvanceSlot(ctx, conn, o.pg.Slot, target, checkpoint.MovedBySkip)
		return lsnText(end), err
	})
}

// move prints what a move skips and, with --yes, does it.
func move(o *options, stdout io.Writer, r moveReport, yes bool, do func() (string, error)) error {
	if !yes {
		if err := emit(o, stdout, r, func(w io.Writer) { printMove(w, r) }); err != nil {
			return err
		}
		return errNeedYes
	}
	end, err := do()
	if err != nil {
		return err
	}
	r.To, r.Applied = end, true
	return emit(o, stdout, r, func(w io.Writer) { printMove(w, r) })
}

type dropReport struct {
	Slot    string      `json:"slot"`
	Dropped bool        `json:"dropped"`
	Pending []eventView `json:"pending_lost"`
	More    bool        `json:"more_pending"`
}

func runSlotDrop(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var yes bool
	o, conn, err := opsCommand(ctx, "slot drop", args, getenv, stderr, func(fs *flag.FlagSet, o *options) {
		fs.BoolVar(&yes, "yes", false, "really drop the slot (without it, only print the pending events it would lose)")
	})
	if conn == nil {
		return err
	}
	defer closeConn(conn)
	const show = 1000
	pending, err := admin.Peek(ctx, conn, o.pg, show)
	if err != nil {
		return err
	}
	r := dropReport{Slot: o.pg.Slot, Pending: eventViews(pending), More: len(pending) == show}
	print := func(w io.Writer) {
		verb := "Dropping"
		if r.Dropped {
			verb = "Dropped"
		}
		more := ""
		if r.More {
			more = " (at least)"
		}
		fmt.Fprintf(w, "%s slot %s and its checkpoint record; %d%s pending event(s) will not be sent by any relay:\n", verb, r.Slot, len(r.Pending), more)
		printEvents(w, r.Pending)
	}
	if !yes {
		if err := emit(o, stdout, r, print); err != nil {
			return err
		}
		return errNeedYes
	}
	if err := admin.DropSlot(ctx, conn, o.pg.Slot); err != nil {
		return err
	}
	r.Dropped = true
	return emit(o, stdout, r, print)
}
