// Command naiverelay is a deliberately naive outbox relay, a yardstick for
// the bench and not a product: it streams the publication, produces every
// insert with an idempotent producer (sarama, or franz-go with
// NAIVE_RELAY_CLIENT=franz) and confirms the slot behind the acks, with no
// metrics, no checkpoint record, no caps, no retries of its own and no error
// handling beyond exiting. Running it through the bench (-baseline-bin)
// shows what the Kafka client alone costs on this machine, so a target can
// be told apart from a floor. It takes the flags the bench gives a relay.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	gometrics "github.com/rcrowley/go-metrics"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "naiverelay:", err)
		os.Exit(1)
	}
}

// producer sends one record and calls ack when the broker has it; it
// keeps the order of records with the same key. close flushes; it is
// called once, at a graceful stop (on an error the process just exits).
type producer interface {
	send(topic string, key, value []byte, ts time.Time, ack func())
	close()
}

func run() error {
	if len(os.Args) < 2 || os.Args[1] != "run" {
		return errors.New("usage: naiverelay run --pg-url URL --kafka-brokers LIST --slot NAME --publication NAME [--topic TEMPLATE] [--metrics-addr ADDR]")
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	pgURL := fs.String("pg-url", "", "replication connection URL")
	brokers := fs.String("kafka-brokers", "", "comma-separated brokers")
	slot := fs.String("slot", "outbox_relay", "replication slot")
	pub := fs.String("publication", "outbox_relay", "publication")
	topic := fs.String("topic", "outbox.event.{aggregate_type}", "topic; {aggregate_type} and {aggregate_id} are replaced")
	addr := fs.String("metrics-addr", "127.0.0.1:0", "serves /readyz (200 once streaming) and an empty /metrics")
	fs.String("log-level", "", "ignored")
	if err := fs.Parse(os.Args[2:]); err != nil {
		return err
	}
	// As the relay does (cmd/outbox-relay/run.go): sarama's go-metrics
	// cost CPU per record and memory per topic.
	gometrics.UseNilMetrics = true
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	var p producer
	var err error
	if os.Getenv("NAIVE_RELAY_CLIENT") == "franz" {
		p, err = newFranz(strings.Split(*brokers, ","))
	} else {
		p, err = newSarama(strings.Split(*brokers, ","))
	}
	if err != nil {
		return err
	}
	ready := make(chan struct{})
	if err := serveReady(*addr, ready); err != nil {
		return err
	}
	return stream(ctx, *pgURL, *slot, *pub, *topic, p, ready)
}

func serveReady(addr string, ready <-chan struct{}) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-ready:
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	// No metrics: the bench's topics scenario counts 0 series.
	mux.HandleFunc("/metrics", func(http.ResponseWriter, *http.Request) {})
	go http.Serve(ln, mux) //nolint:errcheck // lives as long as the process
	return nil
}

// acks confirms a transaction once every event of it and of every
// transaction before it is acked.
type acks struct {
	mu        sync.Mutex
	txns      []*txn // oldest first
	confirmed pglogrepl.LSN
}

type txn struct {
	end     pglogrepl.LSN
	pending int
	closed  bool // its commit was seen
}

func (a *acks) open() *txn {
	t := &txn{}
	a.mu.Lock()
	a.txns = append(a.txns, t)
	a.mu.Unlock()
	return t
}

func (a *acks) add(t *txn) {
	a.mu.Lock()
	t.pending++
	a.mu.Unlock()
}

func (a *acks) done(t *txn) {
	a.mu.Lock()
	t.pending--
	a.advance()
	a.mu.Unlock()
}

func (a *acks) commit(t *txn, end pglogrepl.LSN) {
	a.mu.Lock()
	t.end, t.closed = end, true
	a.advance()
	a.mu.Unlock()
}

func (a *acks) advance() {
	for len(a.txns) > 0 && a.txns[0].closed && a.txns[0].pending == 0 {
		a.confirmed = a.txns[0].end
		a.txns = a.txns[1:]
	}
}

func (a *acks) position() pglogrepl.LSN {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.confirmed
}

func stream(ctx context.Context, url, slot, pub, topic string, p producer, ready chan struct{}) error {
	conn, err := pgconn.Connect(ctx, url+sep(url)+"replication=database")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	opts := pglogrepl.StartReplicationOptions{PluginArgs: []string{"proto_version '1'", "publication_names '" + pub + "'"}}
	if err := pglogrepl.StartReplication(ctx, conn, slot, 0, opts); err != nil {
		return err
	}
	close(ready)
	a := &acks{}
	d := decoder{topic: topic, rels: map[uint32]*pglogrepl.RelationMessage{}, acks: a, p: p}
	nextStatus := time.Now()
	for {
		if time.Now().After(nextStatus) {
			lsn := a.position()
			if err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: lsn, WALFlushPosition: lsn, WALApplyPosition: lsn}); err != nil {
				return err
			}
			nextStatus = time.Now().Add(time.Second)
		}
		rctx, cancel := context.WithDeadline(ctx, nextStatus)
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		if ctx.Err() != nil {
			return finalStatus(conn, a, p)
		}
		if pgconn.Timeout(err) {
			continue
		}
		if err != nil {
			return err
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok || len(cd.Data) == 0 {
			continue
		}
		switch cd.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			if k, err := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:]); err == nil && k.ReplyRequested {
				nextStatus = time.Now()
			}
		case pglogrepl.XLogDataByteID:
			x, err := pglogrepl.ParseXLogData(cd.Data[1:])
			if err != nil {
				return err
			}
			if err := d.decode(x.WALData); err != nil {
				return err
			}
		}
	}
}

// finalStatus flushes the producer and confirms what it acked, as the
// relay's graceful stop does, so a next start on the slot resends nothing.
func finalStatus(conn *pgconn.PgConn, a *acks, p producer) error {
	p.close()
	lsn := a.position()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: lsn, WALFlushPosition: lsn, WALApplyPosition: lsn})
}

func sep(url string) string {
	if strings.Contains(url, "?") {
		return "&"
	}
	return "?"
}

type decoder struct {
	topic string
	rels  map[uint32]*pglogrepl.RelationMessage
	acks  *acks
	p     producer
	cur   *txn
	ts    time.Time
}

func (d *decoder) decode(wal []byte) error {
	m, err := pglogrepl.Parse(wal)
	if err != nil {
		return err
	}
	switch m := m.(type) {
	case *pglogrepl.RelationMessage:
		d.rels[m.RelationID] = m
	case *pglogrepl.BeginMessage:
		d.cur, d.ts = d.acks.open(), m.CommitTime
	case *pglogrepl.CommitMessage:
		d.acks.commit(d.cur, m.TransactionEndLSN)
	case *pglogrepl.InsertMessage:
		rel := d.rels[m.RelationID]
		if rel == nil {
			return fmt.Errorf("insert into unknown relation %d", m.RelationID)
		}
		col := func(name string) []byte {
			for i, c := range rel.Columns {
				if c.Name == name && i < len(m.Tuple.Columns) {
					return m.Tuple.Columns[i].Data
				}
			}
			return nil
		}
		// The receive buffer is reused by the next message: copy out.
		aggID := bytes.Clone(col("aggregate_id"))
		t := d.topic
		if strings.Contains(t, "{") {
			t = strings.ReplaceAll(t, "{aggregate_type}", string(col("aggregate_type")))
			t = strings.ReplaceAll(t, "{aggregate_id}", string(aggID))
		}
		cur := d.cur
		d.acks.add(cur)
		d.p.send(t, aggID, bytes.Clone(col("payload")), d.ts, func() { d.acks.done(cur) })
	}
	return nil
}
