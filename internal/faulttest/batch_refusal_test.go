package faulttest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The refused-batch scenario: one transaction of batchSize rows of one
// aggregate (one partition), the row at badRow larger than the topic's
// max.message.bytes; then a transaction of laterRows more.
const (
	batchSize = 24
	badRow    = 11
	laterRows = 3
	// limitBytes is the topic's max.message.bytes: above any small record
	// alone, below the batch of them (Kafka bounds the whole batch) and
	// below the one big record.
	limitBytes = 2000
)

// TestBatchRefusalBlamesOneRecord pins how a whole-batch refusal was
// blamed: sarama fails every record of a batch the broker refuses, so in
// dead-letter mode every valid neighbour of one oversized record went to
// the dead-letter topic (and was confirmed), and in halt mode the relay
// named the batch's first event. Only the record Kafka refuses alone may
// be dead-lettered or named; its neighbours, and the records queued behind
// the batch, reach their topic, in commit order.
func TestBatchRefusalBlamesOneRecord(t *testing.T) {
	for _, mode := range []relay.Undeliverable{relay.DeadLetter, relay.Halt} {
		t.Run(string(mode), func(t *testing.T) {
			kafkatest.RequireKfake(t, "holding the broker's first produce answer until later rows queue behind the refused batch")
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 1})
			topic := relaytest.Topics("limited")[0]
			if err := env.Kafka.Cluster().CreateTopic(topic, 1, map[string]string{"max.message.bytes": fmt.Sprint(limitBytes)}); err != nil {
				t.Fatal(err)
			}
			release := holdFirstProduce(t, env)
			cfg := env.Config()
			cfg.Relay.OnUndeliverable = mode
			cfg.Sink.Linger = 100 * time.Millisecond // the transaction's rows go in one batch
			run := relaytest.Start(t, cfg)
			run.WaitReady(ctx, t)

			ids, end := writeRefusedBatch(ctx, t, env)
			// Release the refused batch only once the later rows wait behind
			// it in the producer, where a refusal used to let them go first.
			if !eventually.True(ctx, 20*time.Millisecond, func() bool {
				return run.Metric("outbox_relay_events_received_total") >= batchSize+laterRows
			}) {
				t.Fatalf("the relay received %v of %d events: the later rows never waited behind the refused batch (%v)",
					run.Metric("outbox_relay_events_received_total"), batchSize+laterRows, ctx.Err())
			}
			close(release)
			if mode == relay.Halt {
				checkHalt(ctx, t, env, run, ids, end)
				return
			}
			checkDeadLettered(ctx, t, env, run, ids, end)
		})
	}
}

// holdFirstProduce holds the broker's answer to the first produce request
// until release is closed.
func holdFirstProduce(t *testing.T, env *relaytest.Env) chan struct{} {
	release := make(chan struct{})
	var held atomic.Bool
	cluster := env.Kafka.Cluster()
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if held.CompareAndSwap(false, true) {
			cluster.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	return release
}

// writeRefusedBatch writes the scenario's two transactions and returns the
// ids in commit order and the LSN after the first commit.
func writeRefusedBatch(ctx context.Context, t *testing.T, env *relaytest.Env) ([]string, outboxrelay.LSN) {
	t.Helper()
	insert := func(from, to int) []string {
		var ids []string
		err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
			for i := from; i < to; i++ {
				note := strings.Repeat("x", 50)
				if i == badRow {
					note = strings.Repeat("x", 2*limitBytes)
				}
				var id string
				if err := tx.QueryRow(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
					VALUES ('limited', 'agg-1', 'Updated', jsonb_build_object('seq', $1::int, 'note', $2::text))
					RETURNING id::text`, i, note).Scan(&id); err != nil {
					return err
				}
				ids = append(ids, id)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	ids := insert(0, batchSize)
	end := env.CurrentLSN(ctx)
	return append(ids, insert(batchSize, batchSize+laterRows)...), end
}

func checkHalt(ctx context.Context, t *testing.T, env *relaytest.Env, run *relaytest.Running, ids []string, end outboxrelay.LSN) {
	t.Helper()
	select {
	case <-run.Done():
	case <-ctx.Done():
		t.Fatal("the relay did not stop at the oversized record")
	}
	var ue *relay.UndeliverableError
	if err := run.Err(); !errors.As(err, &ue) {
		t.Fatalf("relay stopped with %v, want an *relay.UndeliverableError", err)
	}
	if ue.EventID != ids[badRow] {
		t.Fatalf("the halt names event %s (row %d), want the oversized row %d, %s: %v",
			ue.EventID, indexOf(ids, ue.EventID), badRow, ids[badRow], run.Err())
	}
	if got := env.Confirmed(ctx, env.Slot); got >= end {
		t.Errorf("slot confirmed %s, past the refused transaction (ends by %s)", got, end)
	}
	// The relay has stopped, so Kafka holds all it will. Rows after the
	// refused one must not be there: raising the topic's limit and
	// restarting would put the refused event behind them.
	n, err := kafkatest.Count(ctx, env.Kafka.Addrs(), relaytest.Topics("limited"))
	if err != nil {
		t.Fatal(err)
	}
	if n != badRow {
		recs, err := kafkatest.ReadAll(ctx, env.Kafka.Addrs(), relaytest.Topics("limited"), int(n))
		if err != nil {
			t.Fatal(err)
		}
		t.Errorf("the topic holds %d records, want the %d rows before the refused one (row %d) and none after it: %s",
			n, badRow, badRow, describeExtra(ids, recs))
	}
	t.Logf("halt message: %v", run.Err())
}

// describeExtra names, by offset, the records of recs that are not the
// rows before badRow once each: a row after the refused one (a later
// event that reached Kafka ahead of it), the refused row itself, a
// duplicate of an earlier row, or a record no row wrote.
func describeExtra(ids []string, recs []kafkatest.Record) string {
	var extra []string
	seen := map[string]int64{}
	for _, r := range recs {
		id := r.Headers["id"]
		i := indexOf(ids, id)
		first, dup := seen[id]
		switch {
		case i < 0:
			extra = append(extra, fmt.Sprintf("offset %d: event %q, written by no row", r.Offset, id))
		case dup:
			extra = append(extra, fmt.Sprintf("offset %d: row %d (%s) again, a duplicate of offset %d", r.Offset, i, id, first))
		case i == badRow:
			extra = append(extra, fmt.Sprintf("offset %d: the refused row %d (%s)", r.Offset, i, id))
		case i > badRow:
			extra = append(extra, fmt.Sprintf("offset %d: row %d (%s), %d after the refused one", r.Offset, i, id, i-badRow))
		}
		if !dup {
			seen[id] = r.Offset
		}
	}
	var missing []int
	for i := range badRow {
		if _, ok := seen[ids[i]]; !ok {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		extra = append(extra, fmt.Sprintf("rows %v missing", missing))
	}
	return fmt.Sprintf("%s; rows by offset %v", strings.Join(extra, "; "), rows(ids, headerIDs(recs)))
}

func headerIDs(recs []kafkatest.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Headers["id"]
	}
	return out
}

func checkDeadLettered(ctx context.Context, t *testing.T, env *relaytest.Env, run *relaytest.Running, ids []string, end outboxrelay.LSN) {
	t.Helper()
	env.WaitConfirmed(ctx, env.Slot, env.CurrentLSN(ctx))
	addrs := env.Kafka.Addrs()
	dead, err := kafkatest.Count(ctx, addrs, []string{relay.DefaultConfig().DeadLetterTopic})
	if err != nil {
		t.Fatal(err)
	}
	if dead != 1 {
		t.Fatalf("%d dead-letter records, want exactly the oversized row's", dead)
	}
	dl, err := kafkatest.ReadAll(ctx, addrs, []string{relay.DefaultConfig().DeadLetterTopic}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := dl[0].Headers[relay.HeaderID]; got != ids[badRow] {
		t.Errorf("dead-lettered %s (row %d), want the oversized row %d", got, indexOf(ids, got), badRow)
	}
	topic := relaytest.Topics("limited")
	total, err := kafkatest.Count(ctx, addrs, topic)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := kafkatest.ReadAll(ctx, addrs, topic, int(total))
	if err != nil {
		t.Fatal(err)
	}
	// First occurrences in offset order must be the rows in commit order,
	// the oversized one left out.
	var want []string
	for i, id := range ids {
		if i != badRow {
			want = append(want, id)
		}
	}
	var first []string
	seen := map[string]bool{}
	for _, r := range recs {
		if id := r.Headers["id"]; !seen[id] {
			seen[id] = true
			first = append(first, id)
		}
	}
	if strings.Join(first, ",") != strings.Join(want, ",") {
		t.Errorf("the topic's first occurrences are rows %v, want every row but %d, in commit order", rows(ids, first), badRow)
	}
	if st := run.Relay.State(); st.Phase != relay.PhaseStreaming {
		t.Errorf("relay %s (%s), want it streaming past the refused batch", st.Phase, st.Detail)
	}
	if run.Metric("outbox_relay_sink_batch_isolations_total") < 1 {
		t.Errorf("no batch isolation counted: the batch was never refused whole")
	}
	if env.Confirmed(ctx, env.Slot) < end {
		t.Errorf("slot not past the refused transaction")
	}
	t.Logf("%d records on the topic (%d duplicates), %v isolations, %v reconnects", len(recs), len(recs)-len(first),
		run.Metric("outbox_relay_sink_batch_isolations_total"), run.Metric("outbox_relay_reconnects_total"))
}

func indexOf(ids []string, id string) int {
	for i, x := range ids {
		if x == id {
			return i
		}
	}
	return -1
}

func rows(ids, got []string) []int {
	out := make([]int, len(got))
	for i, id := range got {
		out[i] = indexOf(ids, id)
	}
	return out
}
