package apachekafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	readyPoll    = 50 * time.Millisecond
	probeTimeout = 2 * time.Second
)

// Client returns a franz-go client seeded with every node's PLAINTEXT
// address; opts follow (and so override) the seeds. The caller closes it.
func (c *Cluster) Client(opts ...kgo.Opt) (*kgo.Client, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Addrs()...)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("apachekafka: create client: %w", err)
	}
	return cl, nil
}

// waitReady polls until every node in want lists every running node in
// its metadata and every running node lists the nodes in want: they are
// registered with the controller, unfenced and caught up on metadata. It
// fails at once when a node in want exits.
func (c *Cluster) waitReady(ctx context.Context, want []*node) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	probes := map[*node]*kgo.Client{}
	defer func() {
		for _, cl := range probes {
			cl.Close()
		}
	}()
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	for {
		ok, err := c.ready(ctx, want, probes)
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("apachekafka: wait for %d node(s) to be ready: %w\n%s", len(want), ctx.Err(), c.LogTail(30))
		case <-tick.C:
		}
	}
}

func (c *Cluster) ready(ctx context.Context, want []*node, probes map[*node]*kgo.Client) (bool, error) {
	if c.isClosed() {
		return false, errors.New("apachekafka: cluster closed during start-up")
	}
	for _, n := range want {
		if p := n.proc.Load(); !p.running() {
			return false, c.exitError(n, p)
		}
	}
	running := c.running()
	for _, n := range running {
		ids, err := c.brokerIDs(ctx, n, probes)
		if err != nil {
			return false, nil // not listening yet
		}
		expect := want
		if slices.Contains(want, n) {
			expect = running
		}
		for _, m := range expect {
			if !slices.Contains(ids, m.id) {
				return false, nil
			}
		}
	}
	return true, nil
}

// brokerIDs asks node n itself (not any broker it knows of) which brokers
// are alive.
func (c *Cluster) brokerIDs(ctx context.Context, n *node, probes map[*node]*kgo.Client) ([]int32, error) {
	cl := probes[n]
	if cl == nil {
		var err error
		cl, err = kgo.NewClient(kgo.SeedBrokers(n.addr(ClientListener)), kgo.DialTimeout(time.Second))
		if err != nil {
			return nil, err
		}
		probes[n] = cl
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{} // none: brokers only
	resp, err := cl.SeedBrokers()[0].Request(ctx, req)
	if err != nil {
		return nil, err
	}
	var ids []int32
	for _, b := range resp.(*kmsg.MetadataResponse).Brokers {
		ids = append(ids, b.NodeID)
	}
	return ids, nil
}

// CreateTopic creates a topic (replicationFactor -1: the cluster default)
// with per-topic configs such as "max.message.bytes", and waits until
// every partition has a leader.
func (c *Cluster) CreateTopic(ctx context.Context, topic string, partitions int32, replicationFactor int16, configs map[string]string) error {
	cl, err := c.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	req := kmsg.NewPtrCreateTopicsRequest()
	t := kmsg.NewCreateTopicsRequestTopic()
	t.Topic, t.NumPartitions, t.ReplicationFactor = topic, partitions, replicationFactor
	for _, k := range slices.Sorted(maps.Keys(configs)) {
		cfg := kmsg.NewCreateTopicsRequestTopicConfig()
		cfg.Name, cfg.Value = k, kmsg.StringPtr(configs[k])
		t.Configs = append(t.Configs, cfg)
	}
	req.Topics = append(req.Topics, t)
	req.TimeoutMillis = 30000
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("apachekafka: create topic %q: %w", topic, err)
	}
	for _, rt := range resp.Topics {
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil {
			msg := ""
			if rt.ErrorMessage != nil {
				msg = ": " + *rt.ErrorMessage
			}
			return fmt.Errorf("apachekafka: create topic %q: %w%s", topic, err, msg)
		}
	}
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	for {
		leaders, err := c.leaders(ctx, cl, topic)
		if err == nil && len(leaders) == int(partitions) && !slices.Contains(leaders, -1) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("apachekafka: wait for leaders of new topic %q: %w (last: %v %v)", topic, ctx.Err(), leaders, err)
		case <-tick.C:
		}
	}
}

// Leaders returns, for each partition of topic, the index of the node
// leading it, or -1 while it has no leader.
func (c *Cluster) Leaders(ctx context.Context, topic string) ([]int, error) {
	cl, err := c.Client()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	return c.leaders(ctx, cl, topic)
}

func (c *Cluster) leaders(ctx context.Context, cl *kgo.Client, topic string) ([]int, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("apachekafka: read metadata of %q: %w", topic, err)
	}
	if len(resp.Topics) != 1 {
		return nil, fmt.Errorf("apachekafka: metadata of %q: %d topics in the answer", topic, len(resp.Topics))
	}
	if err := kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil {
		return nil, fmt.Errorf("apachekafka: metadata of %q: %w", topic, err)
	}
	leaders := make([]int, len(resp.Topics[0].Partitions))
	for _, p := range resp.Topics[0].Partitions {
		if int(p.Partition) >= len(leaders) {
			return nil, fmt.Errorf("apachekafka: metadata of %q: partition %d out of range", topic, p.Partition)
		}
		leaders[p.Partition] = -1
		if p.ErrorCode == 0 && p.Leader >= 0 {
			leaders[p.Partition] = c.Index(p.Leader)
		}
	}
	return leaders, nil
}
