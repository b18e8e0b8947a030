package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// prefixCounter counts the records of every topic whose name starts with
// prefix, as an independent client sees them: the sum of their high
// watermarks (with committed: last stable offsets), what the broker
// acked, whoever produced it. It lists the topics on each count until it
// knows one per aggregate, then only reads their offsets; check lists
// them once more at the end.
type prefixCounter struct {
	cl        *kgo.Client
	prefix    string
	expect    int   // topics
	want      int64 // records
	committed bool
	parts     map[string][]int32 // the topics listed and their partitions
}

func newPrefixCounter(brokers []string, prefix string, expect int, want int64, committed bool) (*prefixCounter, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ClientID("bench-topics-counter"))
	if err != nil {
		return nil, err
	}
	return &prefixCounter{cl: cl, prefix: prefix, expect: expect, want: want, committed: committed, parts: map[string][]int32{}}, nil
}

func (c *prefixCounter) Close() { c.cl.Close() }

// acked sums the offsets of the topics listed so far. A listing that
// lacks expected topics, or partitions that did not answer (topics being
// created), counts as below the backlog, so a run never ends on a partial
// sum that duplicates made up.
func (c *prefixCounter) acked(ctx context.Context, _ *relayProc) (int64, error) {
	if len(c.parts) < c.expect {
		if err := c.discover(ctx); err != nil {
			return 0, err
		}
		if len(c.parts) > c.expect {
			return 0, fmt.Errorf("the broker holds %d %s* topics, want %d (one per aggregate)", len(c.parts), c.prefix, c.expect)
		}
	}
	n, unanswered, err := c.sum(ctx)
	if err != nil {
		return 0, err
	}
	if len(c.parts) < c.expect || unanswered > 0 {
		return min(n, c.want-1), nil
	}
	return n, nil
}

// check lists the topics again once the count has reached the backlog:
// exactly one per aggregate, holding exactly the backlog (at least, with
// committed: transaction markers take offsets too), so no event went to a
// topic the count did not know.
func (c *prefixCounter) check(ctx context.Context) error {
	c.parts = map[string][]int32{}
	n, err := c.acked(ctx, nil)
	switch {
	case err != nil:
		return err
	case len(c.parts) != c.expect:
		return fmt.Errorf("the broker lists %d %s* topics with leaders, want %d (one per aggregate)", len(c.parts), c.prefix, c.expect)
	case n < c.want || n > c.want && !c.committed:
		return fmt.Errorf("the %s* topics hold %d records, want %d", c.prefix, n, c.want)
	}
	return nil
}

// discover lists the prefix's topics whose partitions all have a leader.
func (c *prefixCounter) discover(ctx context.Context) error {
	meta, err := prefixMetadata(ctx, c.cl, c.prefix)
	if err != nil {
		return err
	}
	for _, t := range meta {
		if kerr.ErrorForCode(t.ErrorCode) != nil || len(t.Partitions) == 0 {
			continue
		}
		var ps []int32
		for _, p := range t.Partitions {
			if kerr.ErrorForCode(p.ErrorCode) != nil || p.Leader < 0 {
				ps = nil
				break
			}
			ps = append(ps, p.Partition)
		}
		if ps != nil {
			c.parts[*t.Topic] = ps
		}
	}
	return nil
}

// sum reads the offsets of every listed partition; unanswered counts the
// partitions skipped with a retriable error. The bench's brokers are
// single nodes, so the request goes to the seed broker as it is: kgo's
// splitting of it by leader doubled the CPU of a count of 2,000 topics.
func (c *prefixCounter) sum(ctx context.Context) (n int64, unanswered int, err error) {
	if len(c.parts) == 0 {
		return 0, 0, nil
	}
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	if c.committed {
		req.IsolationLevel = 1
	}
	for name, ps := range c.parts {
		t := kmsg.NewListOffsetsRequestTopic()
		t.Topic = name
		for _, p := range ps {
			lp := kmsg.NewListOffsetsRequestTopicPartition()
			lp.Partition, lp.Timestamp = p, -1
			t.Partitions = append(t.Partitions, lp)
		}
		req.Topics = append(req.Topics, t)
	}
	raw, err := c.cl.SeedBrokers()[0].Request(ctx, req)
	if err != nil {
		return 0, 0, fmt.Errorf("list offsets of %d topics: %w", len(c.parts), err)
	}
	for _, t := range raw.(*kmsg.ListOffsetsResponse).Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				if !kerr.IsRetriable(err) && !errors.Is(err, kerr.UnknownTopicOrPartition) {
					return 0, 0, fmt.Errorf("list offsets %s[%d]: %w", t.Topic, p.Partition, err)
				}
				unanswered++
				continue
			}
			n += p.Offset
		}
	}
	return n, unanswered, nil
}
