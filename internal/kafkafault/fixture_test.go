package kafkafault_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/apachekafka"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/faulttest"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// env is one test's outbox database and its slot (a relaytest.Env
// without a broker, so faulttest's load and slot helpers work on it)
// with the relay's Kafka side on an Apache Kafka cluster. Every topic it
// routes to starts with prefix, so tests sharing a cluster never read
// each other's records.
type env struct {
	*relaytest.Env
	kafka  *apachekafka.Cluster
	prefix string
}

// envSeq numbers the envs, so a test run again (-count) on a shared
// cluster gets topics of its own.
var envSeq atomic.Int64

func newEnv(t *testing.T, c *apachekafka.Cluster, prefix string) *env {
	t.Helper()
	return &env{Env: relaytest.NewEnvNoBroker(t, pg), kafka: c, prefix: fmt.Sprintf("%s-%d", prefix, envSeq.Add(1))}
}

// topic is where an event of aggregate type typ goes.
func (e *env) topic(typ string) string { return e.prefix + "." + typ }

// loadTopics are the topics faulttest's load writes to.
func (e *env) loadTopics() []string {
	var ts []string
	for _, typ := range faulttest.AggregateTypes {
		ts = append(ts, e.topic(typ))
	}
	return ts
}

// config is relaytest's configuration with the cluster's PLAINTEXT
// listeners as brokers, this env's topics, and a short stall timeout.
func (e *env) config() relaytest.Config {
	cfg := e.ConfigFor(e.kafka.Addrs())
	cfg.Replication.Route.Topic = e.prefix + ".{aggregate_type}"
	cfg.Relay.DeadLetterTopic = e.prefix + ".dead-letter"
	cfg.Relay.StallTimeout = 3 * time.Second
	return cfg
}

// createTopics creates topics with the cluster's replication factor.
func (e *env) createTopics(ctx context.Context, t *testing.T, partitions int32, configs map[string]string, topics ...string) {
	t.Helper()
	for _, topic := range topics {
		if err := e.kafka.CreateTopic(ctx, topic, partitions, -1, configs); err != nil {
			t.Fatal(err)
		}
	}
}

// confirmed is the slot's confirmed_flush_lsn (0 while it has none).
// Unlike relaytest.Env.Confirmed it returns its error, so a sampling
// goroutine can call it.
func (e *env) confirmed(ctx context.Context) (outboxrelay.LSN, error) {
	var s *string
	err := e.Pool.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", e.Slot).Scan(&s)
	if err != nil || s == nil {
		return 0, err
	}
	return pglogrepl.ParseLSN(*s)
}

// slotSample is the slot's confirmed position read at a time.
type slotSample struct {
	at  time.Time
	lsn outboxrelay.LSN
}

// recordSlot reads the slot's confirmed position every 20 ms until stop,
// which returns the samples, for heldBelow and checkTrail to judge.
func (e *env) recordSlot(ctx context.Context) (stop func() []slotSample) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var samples []slotSample
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond) // sampling the slot over the fault, not waiting for a result
		defer tick.Stop()
		for {
			if lsn, err := e.confirmed(ctx); err == nil {
				samples = append(samples, slotSample{at: time.Now(), lsn: lsn})
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() []slotSample {
		cancel()
		<-done
		return samples
	}
}

// heldBelow fails the test if a sample taken between from and until (the
// fault) shows the slot at or past limit: the end of an event Kafka cannot
// have acked then. It returns the highest position in that window.
func heldBelow(t *testing.T, samples []slotSample, from, until time.Time, limit outboxrelay.LSN) outboxrelay.LSN {
	t.Helper()
	var high outboxrelay.LSN
	n := 0
	for _, s := range samples {
		if s.at.Before(from) || s.at.After(until) {
			continue
		}
		n++
		high = max(high, s.lsn)
		if s.lsn >= limit {
			t.Errorf("slot confirmed %s at %s, %s into the fault: at or past the unacked event ending by %s",
				s.lsn, s.at.Format("15:04:05.000"), s.at.Sub(from).Round(time.Millisecond), limit)
			return high
		}
	}
	if n == 0 {
		t.Errorf("no slot sample during the fault (%s to %s)", from.Format("15:04:05.000"), until.Format("15:04:05.000"))
	}
	return high
}

// appendTime has topics record LogAppendTime: each record's timestamp is
// when its partition leader appended it, before any ack.
var appendTime = map[string]string{"message.timestamp.type": "LogAppendTime"}

// checkTrail fails the test for every written event that a slot sample
// shows confirmed before Kafka had appended it (topics with appendTime).
// A sample is taken after the slot reached its position, and an ack comes
// after the append, so the append of each event at or below a sample's
// position (its After) must be older than the sample. It returns how many
// events it could check (those the samples show confirmed).
func checkTrail(t *testing.T, samples []slotSample, written []faulttest.Written, recs []kafkatest.Record) int {
	t.Helper()
	appended := map[string]time.Time{}
	for _, r := range recs {
		if at, ok := appended[r.Headers["id"]]; !ok || r.Timestamp.Before(at) {
			appended[r.Headers["id"]] = r.Timestamp
		}
	}
	checked, bad := 0, 0
	for _, w := range written {
		i, _ := slices.BinarySearchFunc(samples, w.After, func(s slotSample, lsn outboxrelay.LSN) int { return cmp.Compare(s.lsn, lsn) })
		at, ok := appended[w.ID]
		if i == len(samples) || !ok {
			continue
		}
		checked++
		if s := samples[i]; at.After(s.at) {
			if bad++; bad <= 5 {
				t.Errorf("slot confirmed %s (by %s) before Kafka appended event %s (seq %d, ending by %s) at %s",
					s.lsn, s.at.Format("15:04:05.000"), w.ID, w.Seq, w.After, at.Format("15:04:05.000"))
			}
		}
	}
	if bad > 5 {
		t.Errorf("... %d events confirmed before Kafka had them", bad)
	}
	return checked
}

// verify waits until the slot has confirmed everything written, then
// compares the outbox table, the ground truth, with the records on this
// env's topics in the cluster: faulttest.Verify's check, reading the
// cluster rather than Env.Kafka. except are ids that must not be on
// their topic (a dead-lettered event). It fails the test for a missing
// event, a record of an id not in the table (or excepted), and an
// aggregate whose events first appear out of commit order.
func (e *env) verify(ctx context.Context, t *testing.T, except ...string) (faulttest.Report, []kafkatest.Record) {
	t.Helper()
	faulttest.CatchUp(ctx, t, e.Env, e.Slot, time.Now())
	type row struct {
		agg string
		seq int
	}
	rows := map[string]row{}
	topics := map[string]bool{}
	q, err := e.Pool.Query(ctx, `SELECT id::text, aggregate_type, aggregate_id, COALESCE((payload->>'seq')::int, -1) FROM outbox`)
	if err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	for q.Next() {
		var id, typ, agg string
		var seq int
		if err := q.Scan(&id, &typ, &agg, &seq); err != nil {
			t.Fatalf("read outbox: %v", err)
		}
		topics[e.topic(typ)] = true
		if !slices.Contains(except, id) {
			rows[id] = row{agg: typ + "/" + agg, seq: seq}
		}
	}
	if err := q.Err(); err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	recs := e.read(ctx, t, sortedKeys(topics)...)
	rep := faulttest.Report{Written: len(rows), Dups: map[string]int{}}
	seen := map[string]bool{}
	lastSeq := map[string]int{}
	for _, r := range recs { // by topic, partition, offset
		id := r.Headers["id"]
		want, ok := rows[id]
		if !ok {
			t.Fatalf("record %s/%d@%d has id %q, which is not in the outbox table or must not be there", r.Topic, r.Partition, r.Offset, id)
		}
		if seen[id] {
			rep.Duplicates++
			rep.Dups[id]++
			continue
		}
		seen[id] = true
		if prev, ok := lastSeq[want.agg]; ok && want.seq < prev {
			rep.Reordered = append(rep.Reordered, fmt.Sprintf("aggregate %s: seq %d first delivered after seq %d (%s/%d@%d)",
				want.agg, want.seq, prev, r.Topic, r.Partition, r.Offset))
		}
		lastSeq[want.agg] = want.seq
	}
	rep.Delivered = len(seen)
	var missing []string
	for id, r := range rows {
		if !seen[id] {
			missing = append(missing, fmt.Sprintf("%s(%s seq %d)", id, r.agg, r.seq))
		}
	}
	rep.Missing = len(missing)
	if len(missing) > 0 {
		t.Errorf("%d committed events missing from Kafka, e.g. %s", len(missing), strings.Join(missing[:min(5, len(missing))], ", "))
	}
	for _, r := range rep.Reordered[:min(5, len(rep.Reordered))] {
		t.Errorf("commit order broken: %s", r)
	}
	return rep, recs
}

// read returns every record of topics in the cluster, by topic,
// partition and offset.
func (e *env) read(ctx context.Context, t *testing.T, topics ...string) []kafkatest.Record {
	t.Helper()
	total, err := kafkatest.Count(ctx, e.kafka.Addrs(), topics)
	if err != nil {
		t.Fatal(err)
	}
	if total == 0 {
		return nil
	}
	recs, err := kafkatest.ReadAll(ctx, e.kafka.Addrs(), topics, int(total))
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func sortedKeys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// result is what a fault test reports, one greppable line per fault.
type result struct {
	faulttest.Report
	DeadLetters int
	// Outage is how long the fault lasted; Recovery the time from its end
	// until the slot confirmed everything written by then.
	Outage, Recovery time.Duration
	Reconnects       float64 // outbox_relay_reconnects_total
	Retries          float64 // outbox_relay_sink_retries_total
}

func (r result) log(t *testing.T, fault string) {
	t.Helper()
	t.Logf("KAFKAFAULT fault=%q written=%d delivered=%d missing=%d duplicates=%d reordered=%d dead_letters=%d outage=%s recovery=%s reconnects=%v sink_retries=%v",
		fault, r.Written, r.Delivered, r.Missing, r.Duplicates, len(r.Reordered), r.DeadLetters,
		r.Outage.Round(time.Millisecond), r.Recovery.Round(time.Millisecond), r.Reconnects, r.Retries)
}

func metrics(run *relaytest.Running) (reconnects, retries float64) {
	return run.Metric("outbox_relay_reconnects_total"), run.Metric("outbox_relay_sink_retries_total")
}

// waitStopped waits until the relay's Run returns and gives its error.
func waitStopped(ctx context.Context, t *testing.T, run *relaytest.Running) error {
	t.Helper()
	select {
	case <-run.Done():
		return run.Err()
	case <-ctx.Done():
		st := run.Relay.State()
		t.Fatalf("the relay did not stop: %s %q", st.Phase, st.Detail)
		return nil
	}
}

// partitionEnds returns each partition's high watermark (its record count)
// of topic.
func partitionEnds(ctx context.Context, c *apachekafka.Cluster, topic string) ([]int64, error) {
	cl, err := c.Client()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	return listEnds(ctx, cl, topic)
}

func listEnds(ctx context.Context, cl *kgo.Client, topic string) ([]int64, error) {
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	meta.Topics = append(meta.Topics, mt)
	mresp, err := meta.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	if len(mresp.Topics) != 1 {
		return nil, fmt.Errorf("metadata of %q: %d topics", topic, len(mresp.Topics))
	}
	if err := kerr.ErrorForCode(mresp.Topics[0].ErrorCode); err != nil {
		return nil, fmt.Errorf("metadata of %q: %w", topic, err)
	}
	list := kmsg.NewPtrListOffsetsRequest()
	list.ReplicaID = -1
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = topic
	for _, p := range mresp.Topics[0].Partitions {
		lp := kmsg.NewListOffsetsRequestTopicPartition()
		lp.Partition, lp.Timestamp = p.Partition, -1
		lt.Partitions = append(lt.Partitions, lp)
	}
	list.Topics = append(list.Topics, lt)
	lresp, err := list.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	ends := make([]int64, len(mresp.Topics[0].Partitions))
	for _, rt := range lresp.Topics {
		for _, p := range rt.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return nil, fmt.Errorf("list offsets %s[%d]: %w", topic, p.Partition, err)
			}
			if int(p.Partition) < len(ends) {
				ends[p.Partition] = p.Offset
			}
		}
	}
	return ends, nil
}

// waitReady waits up to d for the relay to report streaming again (its
// state follows acks on a 1 s tick).
func waitReady(ctx context.Context, t *testing.T, run *relaytest.Running, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if !eventually.True(ctx, 20*time.Millisecond, func() bool { return run.Relay.State().Ready() }) {
		st := run.Relay.State()
		t.Errorf("relay %s (%s) %s after it caught up, want streaming", st.Phase, st.Detail, d)
	}
}

// waitSlot waits until the relay has created its slot: events written
// before that are not in its stream.
func (e *env) waitSlot(ctx context.Context, t *testing.T) {
	t.Helper()
	if !eventually.True(ctx, 20*time.Millisecond, func() bool {
		var n int
		err := e.Pool.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", e.Slot).Scan(&n)
		return err == nil && n == 1
	}) {
		t.Fatalf("the relay never created slot %s", e.Slot)
	}
}

// sameSet reports whether a and b hold the same strings, each once.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// underLoad starts a relay with cfg, waits until it streams, starts
// recording the slot and faulttest's write load (a transaction every
// 5 ms), and waits until the load has written n events.
func (e *env) underLoad(ctx context.Context, t *testing.T, cfg relaytest.Config, n int) (*relaytest.Running, *faulttest.Load, func() []slotSample) {
	t.Helper()
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	slot := e.recordSlot(ctx)
	load := faulttest.StartLoad(e.Env, 5*time.Millisecond)
	load.WaitWritten(ctx, t, n)
	return run, load, slot
}

// settled is what settle found.
type settled struct {
	result
	written []faulttest.Written
	samples []slotSample
	checked int // events checkTrail could check
}

// settle ends a fault whose cause is gone since back: it measures the
// recovery (until the slot confirms everything written by then), lets
// the load write 200 more events and stops it, then checks the promise:
// nothing lost and per-aggregate order kept (verify), the slot never
// confirmed before Kafka had an event (checkTrail), the relay streaming.
func (e *env) settle(ctx context.Context, t *testing.T, run *relaytest.Running, load *faulttest.Load, slot func() []slotSample, back time.Time) settled {
	t.Helper()
	var s settled
	s.Recovery = faulttest.CatchUp(ctx, t, e.Env, e.Slot, back)
	load.WaitWritten(ctx, t, len(load.Written())+200)
	s.written = load.Stop()
	faulttest.CheckAcknowledged(ctx, t, e.Env, s.written)
	var recs []kafkatest.Record
	s.Report, recs = e.verify(ctx, t)
	s.samples = slot()
	s.checked = checkTrail(t, s.samples, s.written, recs)
	waitReady(ctx, t, run, 3*time.Second)
	s.Reconnects, s.Retries = metrics(run)
	return s
}
