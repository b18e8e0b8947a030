// Command outbox-relay streams a Postgres outbox table's inserts to Kafka,
// confirming the replication slot only behind broker acks.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/IBM/sarama"

	"github.com/outbox-relay/outbox-relay/sink"
)

// panicsKey carries main's *sink.Panics to runRelay: sarama's panic hook is
// a process global that only main may set, while tests call run in-process,
// many at once, without it.
type panicsKey struct{}

// errUsage marks command-line mistakes; main exits 2 for them.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		// Restore the default action: a second signal exits at once.
		stop()
	}()
	// sarama recovers panics on its own goroutines only through this
	// process global, so it is set here, once, before anything runs; the
	// sinks turn a panic into a session error.
	panics := sink.NewPanics()
	sarama.PanicHandler = panics.Handle
	ctx = context.WithValue(ctx, panicsKey{}, panics)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "outbox-relay:", err)
		os.Exit(1)
	}
}

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error
}

func commands() map[string]command {
	return map[string]command{
		"run":          {"stream the outbox to Kafka (the daemon)", runRelay},
		"status":       {"the slot, its lag and WAL, the publication and the relay's checkpoint", runStatus},
		"preflight":    {"check the server, role, table, publication and slot before attaching", runPreflight},
		"setup":        {"create the publication, slot and checkpoint table (--print-sql for a DBA)", runSetup},
		"slot peek":    {"list the pending events without consuming them", runSlotPeek},
		"slot advance": {"move the slot forward to an LSN (--yes), skipping what lies before", runSlotAdvance},
		"slot skip":    {"move the slot past one undeliverable event (--yes)", runSlotSkip},
		"slot drop":    {"drop the slot and its checkpoint record (--yes)", runSlotDrop},
		"version":      {"the version, commit, Go and sarama versions of this build (also --version)", runVersion},
		"prune":        {"delete outbox rows older than --older-than, in batches (--yes)", runPrune},
		"replay":       {"re-publish outbox rows created in a window through run's mapping (--yes)", runReplay},
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	if args[0] == "--version" || args[0] == "-version" {
		args[0] = "version"
	}
	name, rest := args[0], args[1:]
	if name == "slot" && len(rest) > 0 {
		name, rest = "slot "+rest[0], rest[1:]
	}
	c, ok := cmds[name]
	if !ok {
		fmt.Fprintf(stderr, "outbox-relay: unknown command %q\n\n", name)
		usage(stderr, cmds)
		return errUsage
	}
	return c.run(ctx, rest, getenv, stdout, stderr)
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "outbox-relay: Postgres outbox -> Kafka over logical replication, confirmed only behind broker acks.")
	fmt.Fprintln(w, "\nUsage: outbox-relay <command> [flags]   (outbox-relay <command> --help for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nEvery flag can also be set as OUTBOX_RELAY_<FLAG> (e.g. OUTBOX_RELAY_PG_URL) or in a YAML file (--config);")
	fmt.Fprintln(w, "flags win over the environment, which wins over the file. The consents --accept-gap and --yes")
	fmt.Fprintln(w, "are read from the command line only.")
}
