package inbox_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/relaytest"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/inbox"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
)

var dbSeq atomic.Int64

// env is one test's database (with the inbox table and an effects table)
// and broker.
type env struct {
	t     *testing.T
	pool  *pgxpool.Pool
	kafka *kafkatest.Broker
	url   string
}

// effectsSQL is what the test handlers write: one row per application of
// an event, so a second application shows as a second row.
const effectsSQL = `CREATE TABLE effects (
	seq       bigserial PRIMARY KEY,
	event_id  text NOT NULL,
	topic     text NOT NULL,
	partition int  NOT NULL,
	value     text
)`

func newEnv(t *testing.T, topics ...string) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url, err := pg.CreateDatabase(ctx, fmt.Sprintf("inbox_%d_%d", os.Getpid(), dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 12
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := inbox.CreateSchema(ctx, pool, inbox.DefaultTable); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, effectsSQL); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, pool: pool, url: url, kafka: kafkatest.New(t, kafkatest.Options{Topics: topics})}
}

// record is one record to produce.
type record struct {
	topic, id, key, value string
	headers               map[string]string
}

// produce writes records synchronously, in order per partition (the key
// picks the partition).
func (e *env) produce(ctx context.Context, recs ...record) {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kafka.Addrs()...), kgo.AllowAutoTopicCreation())
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	krs := make([]*kgo.Record, 0, len(recs))
	for _, r := range recs {
		kr := &kgo.Record{Topic: r.topic, Key: []byte(r.key), Value: []byte(r.value)}
		if r.id != "" {
			kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: "id", Value: []byte(r.id)})
		}
		for k, v := range r.headers {
			kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
		krs = append(krs, kr)
	}
	if err := cl.ProduceSync(ctx, krs...).FirstErr(); err != nil {
		e.t.Fatalf("produce: %v", err)
	}
}

// testSarama is a client configuration with short timings for tests.
func testSarama() *sarama.Config {
	sc := sarama.NewConfig()
	sc.Consumer.Group.Heartbeat.Interval = 300 * time.Millisecond
	sc.Consumer.Group.Session.Timeout = 6 * time.Second
	sc.Consumer.Group.Rebalance.Timeout = 6 * time.Second
	sc.Consumer.Offsets.AutoCommit.Interval = 200 * time.Millisecond
	sc.Consumer.MaxWaitTime = 100 * time.Millisecond
	sc.Metadata.RefreshFrequency = time.Second
	return sc
}

// config is a Consumer configuration for this env with short timings.
func (e *env) config(group string, h inbox.Handler, topics ...string) inbox.Config {
	return inbox.Config{
		Brokers: e.kafka.Addrs(), Group: group, Topics: topics, DB: e.pool, Handler: h,
		Backoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second, TopicRefresh: time.Second, Sarama: testSarama(),
	}
}

// running is a Consumer running in the background.
type running struct {
	c    *inbox.Consumer
	reg  *prometheus.Registry
	stop context.CancelFunc
	done chan error
}

func (e *env) start(cfg inbox.Config) *running {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	log := zerolog.New(zerolog.NewTestWriter(e.t)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	c, err := inbox.New(cfg, inbox.WithLogger(log), inbox.WithRegistry(reg))
	if err != nil {
		e.t.Fatalf("inbox.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, reg: reg, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-r.done })
	return r
}

// shutdown stops the consumer gracefully and returns Run's result.
func (r *running) shutdown(t *testing.T, within time.Duration) error {
	t.Helper()
	r.stop()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(within):
		t.Fatalf("Run did not return within %s of the shutdown", within)
		return nil
	}
}

// metric sums a metric's samples (all labels); histograms count samples.
func (r *running) metric(name string) float64 { return relaytest.MetricSum(r.reg, name) }

// recordEffect is the test handlers' effect: a row in effects, written
// through the inbox's transaction.
func recordEffect(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
	_, err := tx.Exec(ctx, "INSERT INTO effects (event_id, topic, partition, value) VALUES ($1, $2, $3, $4)",
		msg.ID, msg.Topic, msg.Partition, string(msg.Value))
	return err
}

// effect is one row of effects.
type effect struct {
	id, value string
	partition int
}

// effects returns the effects in the order they were committed... by seq,
// which is the order their transactions took seq numbers: per partition,
// the handling order.
func (e *env) effects(ctx context.Context) []effect {
	e.t.Helper()
	rows, err := e.pool.Query(ctx, "SELECT event_id, coalesce(value, ''), partition FROM effects ORDER BY seq")
	if err != nil {
		e.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (effect, error) {
		var f effect
		return f, r.Scan(&f.id, &f.value, &f.partition)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// waitEffects polls until effects has at least n rows.
func (e *env) waitEffects(ctx context.Context, n int) []effect {
	e.t.Helper()
	var got []effect
	if !eventually.True(ctx, 50*time.Millisecond, func() bool { got = e.effects(ctx); return len(got) >= n }) {
		e.t.Fatalf("effects: %d rows, want %d", len(got), n)
	}
	return got
}

// countByID counts effects per event id.
func countByID(fs []effect) map[string]int {
	m := map[string]int{}
	for _, f := range fs {
		m[f.id]++
	}
	return m
}

// ids returns "prefix-0" ... "prefix-(n-1)".
func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}
