package kafkafault_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/apachekafka"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/sink"
)

const (
	// loadPartitions is the partition count of the load's topics in the
	// leader test: more than the load's 8 aggregates per topic, so some
	// partitions carry no traffic until the fault.
	loadPartitions = 12
	// soloType routes to a topic of replication factor 1: its partitions
	// on a dead node have no leader at all until the node is back.
	soloType = "solo"
)

// TestLeaderKilled (fault 2) kills (-9) the node leading the busiest
// partition of a three-node cluster (replication factor 3,
// min.insync.replicas=2) under load, and at once writes the first events
// of partitions that had no traffic and are led by that node (sarama
// starts a partition producer for them mid-fault):
//
//   - election: partitions of the load's topics, whose leadership moves.
//     The slot must pass those events while the node is still down: the
//     relay follows the election without it;
//   - leader-less: partitions of a replication-factor-1 topic as well,
//     which have no leader until the node is back (sarama's leader-less
//     path). The slot must stay before them until then.
//
// Then the node comes back, and everything is delivered in per-aggregate
// order, never confirmed before Kafka had it.
func TestLeaderKilled(t *testing.T) {
	c := apachekafka.New(t, apachekafka.Options{Nodes: 3})
	for _, tc := range []struct {
		name string
		solo bool          // write to the leader-less partitions too
		down time.Duration // how long the node stays down
	}{
		// Past the broker session (3 s in the harness), so leaders move.
		{"election", false, 8 * time.Second},
		// Past sarama's metadata retries too, twice over: a lookup retries
		// 10 x 500 ms while a partition has no leader, then fails.
		{"leader-less", true, 15 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) { testLeaderKilled(t, c, tc.name, tc.solo, tc.down) })
	}
}

func testLeaderKilled(t *testing.T, c *apachekafka.Cluster, name string, solo bool, down time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newEnv(t, c, "leader-"+name)
	e.createTopics(ctx, t, loadPartitions, appendTime, e.loadTopics()...)
	topics := e.loadTopics()
	if solo {
		if err := c.CreateTopic(ctx, e.topic(soloType), 6, 1, map[string]string{"min.insync.replicas": "1"}); err != nil {
			t.Fatal(err)
		}
		topics = append(topics, e.topic(soloType))
	}
	run, load, slot := e.underLoad(ctx, t, e.config(), 500)

	victim, busiest := busiestLeader(ctx, t, c, e.loadTopics())
	idle := idleAggregates(ctx, t, c, victim, topics, e.prefix+".")
	if solo && len(idle[soloType]) == 0 {
		t.Fatalf("node %d leads no partition of %s: the leader-less case is not exercised", victim, e.topic(soloType))
	}
	killedAt := time.Now()
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	idleEnd := insertIdle(ctx, t, e, idle)
	elected := waitElected(ctx, t, c, victim, e.loadTopics())
	electedAfter := time.Since(killedAt)
	passed := "" // when the slot passed the idle partitions' events
	if !solo {
		// The node stays down: the relay must follow the new leaders.
		wait, cancelWait := context.WithDeadline(ctx, killedAt.Add(down))
		defer cancelWait()
		if !eventually.True(wait, 20*time.Millisecond, func() bool {
			got, err := e.confirmed(ctx)
			return err == nil && got >= idleEnd
		}) {
			t.Fatalf("the slot did not pass the first events of the idle partitions within %s of the kill: "+
				"the relay did not follow the new leaders (elected after %s)", down, electedAfter.Round(time.Millisecond))
		}
		passed = fmt.Sprintf("slot passed the idle partitions' events %s after the kill, the node still down",
			time.Since(killedAt).Round(time.Millisecond))
	}
	time.Sleep(time.Until(killedAt.Add(down))) // the fault's length: the load writes on meanwhile
	reconnectsDown, retriesDown := metrics(run)
	errorsDown := run.Metric("outbox_relay_sink_errors_total")

	healAt := time.Now()
	if err := c.Start(ctx, victim); err != nil {
		t.Fatal(err)
	}
	backAt := time.Now()
	s := e.settle(ctx, t, run, load, slot, backAt)
	if solo {
		passed = fmt.Sprintf("slot held at %s (< %s, the leader-less events' end) until the restart",
			heldBelow(t, s.samples, killedAt, healAt, idleEnd), idleEnd)
	}
	t.Logf("killed node %d, leader of %s; new leaders of the load topics after %s: %v; first events of idle partitions it led: %v; "+
		"%s; %d events checked acked before confirmed; while down (%s): %v reconnects, %v sink retries, %v final sink errors; back in %s",
		victim, busiest, electedAfter.Round(time.Millisecond), elected, idle, passed, s.checked, healAt.Sub(killedAt).Round(time.Millisecond),
		reconnectsDown, retriesDown, errorsDown, backAt.Sub(healAt).Round(time.Millisecond))
	s.Outage = backAt.Sub(killedAt)
	s.log(t, "leader of the busiest partition killed (3 nodes): "+name)
}

// busiestLeader returns the node leading the load partition with the most
// records, and that partition.
func busiestLeader(ctx context.Context, t *testing.T, c *apachekafka.Cluster, topics []string) (int, string) {
	t.Helper()
	var best int64 = -1
	victim, where := -1, ""
	for _, topic := range topics {
		ends, err := partitionEnds(ctx, c, topic)
		if err != nil {
			t.Fatal(err)
		}
		leaders, err := c.Leaders(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		for p, n := range ends {
			if n > best && leaders[p] >= 0 {
				best, victim, where = n, leaders[p], fmt.Sprintf("%s/%d (%d records)", topic, p, n)
			}
		}
	}
	if victim < 0 {
		t.Fatal("no load partition has a leader")
	}
	return victim, where
}

// idleAggregates picks, for each topic, one aggregate id per partition
// that node leads and that holds no record yet, keyed by aggregate type
// (the topic without prefix).
func idleAggregates(ctx context.Context, t *testing.T, c *apachekafka.Cluster, node int, topics []string, prefix string) map[string][]string {
	t.Helper()
	idle := map[string][]string{}
	for _, topic := range topics {
		ends, err := partitionEnds(ctx, c, topic)
		if err != nil {
			t.Fatal(err)
		}
		leaders, err := c.Leaders(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		typ := topic[len(prefix):]
		for p := range ends {
			if ends[p] == 0 && leaders[p] == node {
				idle[typ] = append(idle[typ], aggregateOn(int32(p), int32(len(ends))))
			}
		}
	}
	return idle
}

// aggregateOn returns an aggregate id the relay routes to partition p of n
// (it partitions by aggregate id).
func aggregateOn(p, n int32) string {
	for i := 0; ; i++ {
		id := fmt.Sprintf("idle-%d", i)
		if sink.PartitionFor([]byte(id), n) == p {
			return id
		}
	}
}

// insertIdle writes three events for each idle aggregate in one
// transaction and returns a position at or past its end.
func insertIdle(ctx context.Context, t *testing.T, e *env, idle map[string][]string) outboxrelay.LSN {
	t.Helper()
	err := pgx.BeginFunc(ctx, e.Pool, func(tx pgx.Tx) error {
		for _, typ := range slices.Sorted(maps.Keys(idle)) {
			for _, agg := range idle[typ] {
				for seq := range 3 {
					if _, err := tx.Exec(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
						VALUES ($1, $2, 'Created', jsonb_build_object('seq', $3::int))`, typ, agg, seq); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("insert the idle partitions' events: %v", err)
	}
	return e.CurrentLSN(ctx)
}

// waitElected waits until no partition of topics is led by node or has
// no leader, and returns the new leaders.
func waitElected(ctx context.Context, t *testing.T, c *apachekafka.Cluster, node int, topics []string) map[string][]int {
	t.Helper()
	got := map[string][]int{}
	ok := eventually.True(ctx, 50*time.Millisecond, func() bool {
		for _, topic := range topics {
			leaders, err := c.Leaders(ctx, topic)
			if err != nil || slices.Contains(leaders, node) || slices.Contains(leaders, -1) {
				return false
			}
			got[topic] = leaders
		}
		return true
	})
	if !ok {
		t.Fatalf("partitions of %v still led by the killed node %d or by none", topics, node)
	}
	return got
}
