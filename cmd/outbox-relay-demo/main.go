// Command outbox-relay-demo shows the relay end to end on a laptop with
// nothing installed but Go and the PostgreSQL server binaries: it starts a
// throwaway Postgres with logical replication and a local Kafka-protocol
// broker (kfake, persisting under a temp dir), runs the real outbox-relay
// binary against them, writes sample order events in transactions, and
// prints what arrives in Kafka and the slot's confirmed LSN moving.
// Ctrl-C stops everything and removes the temp dirs.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("outbox-relay-demo", flag.ContinueOnError)
	relayBin := fs.String("relay", "bin/outbox-relay", "path to the outbox-relay binary (make build)")
	txns := fs.Int("transactions", 0, "stop after writing this many order transactions (0: until Ctrl-C)")
	every := fs.Duration("every", time.Second, "pause between order transactions")
	if err := fs.Parse(args); err != nil {
		return err
	}
	out = &lockedWriter{w: out}
	if _, err := os.Stat(*relayBin); err != nil {
		return fmt.Errorf("relay binary %s: %w (run `make build` first, or `make demo`)", *relayBin, err)
	}

	pg, broker, cleanup, err := startBackends(ctx, out)
	if err != nil {
		return err
	}
	defer cleanup()
	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   postgres: %s\n   kafka:    %s\n   metrics:  http://%s/metrics\n", pg.URL(), strings.Join(broker.Addrs(), ","), metricsAddr)

	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRelay()
	relay := exec.CommandContext(relayCtx, *relayBin, "run",
		"--pg-url", pg.URL(), "--kafka-brokers", strings.Join(broker.Addrs(), ","),
		"--log-format", "console", "--status-interval", "1s", "--metrics-addr", metricsAddr)
	// The relay gets its own process group: a terminal's Ctrl-C reaches
	// only the demo, which then sends the relay one SIGTERM. Sent both, the
	// relay would take the second signal as "exit at once" and skip its
	// drain and final status update.
	relay.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	relay.Cancel = func() error { return relay.Process.Signal(syscall.SIGTERM) }
	relay.WaitDelay = 30 * time.Second
	relay.Stdout, relay.Stderr = prefixed(out, "relay | "), prefixed(out, "relay | ")
	fmt.Fprintf(out, "== starting %s run\n", *relayBin)
	if err := relay.Start(); err != nil {
		return fmt.Errorf("start relay: %w", err)
	}

	// Rows committed before the relay has created its slot would not be in
	// the stream: start the application once the relay is ready.
	if err := waitReady(ctx, metricsAddr, out); err != nil {
		stopRelay()
		_ = relay.Wait()
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	written := make(chan writtenUpTo, 1)
	g.Go(func() error { return writeOrders(gctx, pg.URL(), *txns, *every, written, out) })
	g.Go(func() error { return consume(gctx, broker.Addrs(), out) })
	g.Go(func() error { return watchSlot(gctx, pg.URL(), out) })
	if *txns > 0 {
		g.Go(func() error { return stopWhenDelivered(gctx, pg.URL(), broker.Addrs(), written, out) })
	}
	err = g.Wait()
	fmt.Fprintln(out, "== stopping the relay (SIGTERM: drain acks, final status update)")
	stopRelay()
	if werr := relay.Wait(); werr != nil && !isSignalExit(werr) && !errors.Is(werr, context.Canceled) {
		fmt.Fprintln(out, "relay exited:", werr)
	}
	if errors.Is(err, errDone) || ctx.Err() != nil {
		fmt.Fprintln(out, "== done; throwaway Postgres and broker removed")
		return nil
	}
	return err
}

// startBackends starts the throwaway Postgres with the outbox table and the
// embedded broker; cleanup removes both.
func startBackends(ctx context.Context, out io.Writer) (_ *pgtest.Server, _ *kafkatest.Broker, cleanup func(), err error) {
	var undo []func()
	cleanup = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	fmt.Fprintln(out, "== starting a throwaway Postgres (wal_level=logical)")
	pg, err := pgtest.Start(ctx, pgtest.Options{})
	if err != nil {
		return nil, nil, nil, err
	}
	undo = append(undo, pg.Close)
	dataDir, err := os.MkdirTemp("", "outbox-relay-demo-kafka-")
	if err != nil {
		return nil, nil, nil, err
	}
	undo = append(undo, func() { os.RemoveAll(dataDir) })
	fmt.Fprintf(out, "== starting a local Kafka-protocol broker (kfake, data in %s)\n", dataDir)
	broker, err := kafkatest.Start(kafkatest.Options{Partitions: 3, DataDir: dataDir})
	if err != nil {
		return nil, nil, nil, err
	}
	undo = append(undo, broker.Close)
	schema, err := os.ReadFile(filepath.Join("testdata", "outbox.sql"))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read the outbox table definition (run from the repository root): %w", err)
	}
	if err := pg.Exec(ctx, string(schema)); err != nil {
		return nil, nil, nil, fmt.Errorf("create outbox table: %w", err)
	}
	return pg, broker, cleanup, nil
}

var errDone = errors.New("all demo events delivered")

var orderEvents = []string{"OrderPlaced", "PaymentCaptured", "OrderShipped"}

// writeOrders writes, per transaction, an order row and its outbox events,
// the way an application would: one transaction for both.
func writeOrders(ctx context.Context, url string, n int, every time.Duration, written chan<- writtenUpTo, out io.Writer) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, customer text, total numeric)"); err != nil {
		return err
	}
	total := 0
	for i := 1; n == 0 || i <= n; i++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			var orderID int64
			if err := tx.QueryRow(ctx, "INSERT INTO orders (customer, total) VALUES ($1, $2) RETURNING id",
				fmt.Sprintf("customer-%d", i%5), 10*i).Scan(&orderID); err != nil {
				return err
			}
			for _, ev := range orderEvents {
				if _, err := tx.Exec(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, headers)
					VALUES ('order', $1::bigint::text, $2, jsonb_build_object('order_id', $1::bigint, 'total', $3::numeric),
					        jsonb_build_object('traceparent', '00-' || md5(random()::text) || '-' || left(md5(random()::text), 16) || '-01'))`,
					orderID, ev, 10*i); err != nil {
					return err
				}
				total++
			}
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("write order transaction: %w", err)
		}
		fmt.Fprintf(out, "app   | committed order %d with %d outbox events\n", i, len(orderEvents))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
	var end string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&end); err != nil {
		return err
	}
	written <- writtenUpTo{events: total, lsn: end}
	return nil
}

// writtenUpTo is what the application wrote: how many events, and a WAL
// position at or past its last commit.
type writtenUpTo struct {
	events int
	lsn    string
}

func consume(ctx context.Context, brokers []string, out io.Writer) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("outbox.event.order"),
		kgo.MetadataMinAge(500*time.Millisecond), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		fetches.EachRecord(func(r *kgo.Record) {
			hs := make([]string, 0, len(r.Headers))
			for _, h := range r.Headers {
				hs = append(hs, h.Key+"="+string(h.Value))
			}
			sort.Strings(hs)
			fmt.Fprintf(out, "kafka | %s [p%d @%d] key=%s\n        headers: %s\n        value:   %s\n",
				r.Topic, r.Partition, r.Offset, r.Key, strings.Join(hs, " "), r.Value)
		})
	}
}

func watchSlot(ctx context.Context, url string, out io.Writer) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	last := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		var confirmed, current *string
		err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text
			FROM pg_replication_slots WHERE slot_name = 'outbox_relay'`).Scan(&confirmed, &current)
		if err != nil || confirmed == nil {
			continue
		}
		if *confirmed != last {
			fmt.Fprintf(out, "slot  | confirmed_flush_lsn %s (server WAL %s)\n", *confirmed, *current)
			last = *confirmed
		}
	}
}

// stopWhenDelivered ends a bounded demo once every event is in Kafka and the
// slot has confirmed past the last commit.
func stopWhenDelivered(ctx context.Context, url string, brokers []string, written <-chan writtenUpTo, out io.Writer) error {
	var w writtenUpTo
	select {
	case <-ctx.Done():
		return nil
	case w = <-written:
	}
	n := w.events
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		got, err := kafkatest.Count(ctx, brokers, []string{"outbox.event.order"})
		var caughtUp bool
		if err == nil && got >= int64(n) {
			_ = conn.QueryRow(ctx, `SELECT confirmed_flush_lsn >= $1::pg_lsn
				FROM pg_replication_slots WHERE slot_name = 'outbox_relay'`, w.lsn).Scan(&caughtUp)
		}
		if caughtUp {
			fmt.Fprintf(out, "== all %d events delivered and confirmed\n", n)
			return errDone
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func waitReady(ctx context.Context, addr string, out io.Writer) error {
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				fmt.Fprintf(out, "== relay ready (%s); writing orders\n", strings.TrimSpace(string(body)))
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func isSignalExit(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && !ee.Exited()
}

// lockedWriter serializes writes from the demo's goroutines and the
// relay's output copiers; each Fprintf is one Write, so lines stay whole.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// lineWriter prefixes each complete line, so relay logs read apart from the
// demo's own lines.
type lineWriter struct {
	out    io.Writer
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func prefixed(out io.Writer, prefix string) io.Writer { return &lineWriter{out: out, prefix: prefix} }

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		fmt.Fprintf(l.out, "%s%s\n", l.prefix, l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}
