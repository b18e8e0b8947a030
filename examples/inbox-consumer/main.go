// Command inbox-consumer is a runnable example of package inbox: it keeps
// inbox_example_counts(aggregate_id, n), adding 1 for every event whose
// aggregate_id header names it, once per event however often Kafka
// delivers it. It creates its tables if missing and exits cleanly on
// SIGTERM or SIGINT (in-flight records commit, offsets are committed).
//
//	go run ./examples/inbox-consumer --pg-url URL --kafka-brokers HOSTS --group NAME --topic-regex REGEX
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/outbox-relay/outbox-relay/inbox"
	"github.com/outbox-relay/outbox-relay/seal"
)

// countsSQL is the example's effect table.
const countsSQL = `CREATE TABLE IF NOT EXISTS inbox_example_counts (
    aggregate_id text PRIMARY KEY,
    n            bigint NOT NULL
)`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "inbox-consumer:", err)
		os.Exit(1)
	}
}

type options struct {
	pgURL, brokers, group, topicRegex, keys string
	metricsAddr                             string
	shutdownTimeout, sessionTimeout         time.Duration
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("inbox-consumer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.pgURL, "pg-url", "", "Postgres connection URL of the application's database (required)")
	fs.StringVar(&o.brokers, "kafka-brokers", "localhost:9092", "comma-separated Kafka bootstrap brokers")
	fs.StringVar(&o.group, "group", "inbox-example", "Kafka consumer group (and the inbox table's consumer_group)")
	fs.StringVar(&o.topicRegex, "topic-regex", `^outbox\.event\.`, "topics to consume, a regular expression")
	fs.StringVar(&o.keys, "encryption-keys", "", "the relay's --encryption-keys file, to open sealed values")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", inbox.DefaultShutdownTimeout, "how long in-flight records may run after SIGTERM")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve the inbox metrics at http://ADDR/metrics (off when empty)")
	fs.DurationVar(&o.sessionTimeout, "session-timeout", 10*time.Second, "Kafka group session timeout: how long a dead consumer keeps its partitions")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.pgURL == "" {
		return o, errors.New("--pg-url is required: the database whose inbox_example_counts the consumer keeps")
	}
	return o, nil
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	re, err := regexp.Compile(o.topicRegex)
	if err != nil {
		return fmt.Errorf("--topic-regex %q: %w", o.topicRegex, err)
	}
	var keys *seal.Keys
	if o.keys != "" {
		if keys, err = seal.Load(o.keys); err != nil {
			return err
		}
	}
	pool, err := pgxpool.New(ctx, o.pgURL)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer pool.Close()
	if err := inbox.CreateSchema(ctx, pool, inbox.DefaultTable); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, countsSQL); err != nil {
		return fmt.Errorf("create inbox_example_counts: %w", err)
	}
	sc := sarama.NewConfig()
	sc.Consumer.Group.Session.Timeout = o.sessionTimeout
	sc.Consumer.Group.Heartbeat.Interval = o.sessionTimeout / 3
	log := zerolog.New(stderr).With().Timestamp().Logger()
	reg := prometheus.NewRegistry()
	if o.metricsAddr != "" {
		stop, err := serveMetrics(o.metricsAddr, reg)
		if err != nil {
			return err
		}
		defer stop()
	}
	c, err := inbox.New(inbox.Config{
		Brokers: strings.Split(o.brokers, ","), Group: o.group, TopicRegex: re, TopicRefresh: 2 * time.Second,
		DB: pool, Handler: count, Keys: keys, ShutdownTimeout: o.shutdownTimeout, Sarama: sc,
	}, inbox.WithLogger(log), inbox.WithRegistry(reg))
	if err != nil {
		return err
	}
	log.Info().Str("group", o.group).Str("topic_regex", o.topicRegex).Msg("consuming")
	if err := c.Run(ctx); err != nil {
		return err
	}
	log.Info().Msg("stopped")
	return nil
}

// serveMetrics serves reg until stop is called.
func serveMetrics(addr string, reg *prometheus.Registry) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %q: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	return func() { _ = srv.Close(); <-done }, nil
}

// count is the handler: its one effect goes through tx, so it is applied
// exactly when the event's id is recorded.
func count(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
	agg, ok := msg.Header("aggregate_id")
	if !ok {
		return errors.New("no aggregate_id header: not an outbox-relay event")
	}
	_, err := tx.Exec(ctx, `INSERT INTO inbox_example_counts (aggregate_id, n) VALUES ($1, 1)
		ON CONFLICT (aggregate_id) DO UPDATE SET n = inbox_example_counts.n + 1`, string(agg))
	return err
}
