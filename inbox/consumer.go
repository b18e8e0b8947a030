package inbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// Consumer runs the inbox for one consumer group. Build it with New, run
// it with Run (once).
type Consumer struct {
	cfg   Config
	table string // sanitized
	sc    *sarama.Config
	log   zerolog.Logger
	reg   prometheus.Registerer
	m     *metrics
	sem   chan struct{} // MaxConcurrency tokens
}

// New validates cfg and starts nothing.
func New(cfg Config, opts ...Option) (*Consumer, error) {
	cfg.setDefaults()
	c := &Consumer{cfg: cfg, log: zerolog.Nop()}
	for _, o := range opts {
		o(c)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	id, _ := tableIdent(cfg.Table)
	c.table = id.Sanitize()
	c.sc = cfg.saramaConfig()
	if err := c.sc.Validate(); err != nil {
		return nil, fmt.Errorf("inbox: Config.Sarama: %w", err)
	}
	if rt := c.sc.Consumer.Group.Rebalance.Timeout; cfg.ShutdownTimeout >= rt {
		// A member slower than this to release its partitions is dropped
		// from the group mid-record.
		return nil, configError("ShutdownTimeout", fmt.Sprintf("is %s, not below Sarama.Consumer.Group.Rebalance.Timeout %s", cfg.ShutdownTimeout, rt),
			"shorten it or raise the rebalance timeout")
	}
	m, err := newMetrics(c.reg)
	if err != nil {
		return nil, err
	}
	c.m = m
	c.sem = make(chan struct{}, cfg.MaxConcurrency)
	return c, nil
}

// Run consumes until ctx ends or the Kafka client fails for good, and
// returns nil after a graceful shutdown: no record is taken after ctx
// ends, records in flight get Config.ShutdownTimeout to commit (then
// their contexts are cancelled and they roll back), and the offsets of
// committed records are committed to Kafka before Run returns.
func (c *Consumer) Run(ctx context.Context) error {
	if err := c.checkTable(ctx); err != nil {
		return err
	}
	client, err := sarama.NewClient(c.cfg.Brokers, c.sc)
	if err != nil {
		return fmt.Errorf("connect to kafka %v: %w", c.cfg.Brokers, err)
	}
	defer client.Close()
	group, err := sarama.NewConsumerGroupFromClient(c.cfg.Group, client)
	if err != nil {
		return fmt.Errorf("join consumer group %q: %w", c.cfg.Group, err)
	}
	dlq, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		_ = group.Close()
		return fmt.Errorf("start the dead-letter producer: %w", err)
	}
	// Handlers outlive ctx by up to ShutdownTimeout: a record in flight
	// at shutdown commits rather than rolls back.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(c.cfg.ShutdownTimeout, cancelWork) })
	defer stop()

	h := &groupHandler{c: c, work: work, dlq: dlq}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { c.logErrors(group); return nil })
	g.Go(func() error {
		defer func() { _ = group.Close() }()
		return c.consume(gctx, client, group, h)
	})
	g.Go(func() error { return c.prune(gctx) })
	err = g.Wait()
	if cerr := dlq.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close the dead-letter producer: %w", cerr)
	}
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// consume runs group sessions until ctx ends, re-joining after each
// rebalance and whenever the topics TopicRegex matches change.
func (c *Consumer) consume(ctx context.Context, client sarama.Client, group sarama.ConsumerGroup, h *groupHandler) error {
	for ctx.Err() == nil {
		topics, err := c.topics(client)
		if err != nil || len(topics) == 0 {
			c.log.Warn().Err(err).Msg("no topic to consume yet; looking again after the topic refresh interval")
			if !sleep(ctx, c.cfg.TopicRefresh) {
				break
			}
			continue
		}
		sctx, cancel := context.WithCancel(ctx)
		watched := make(chan struct{})
		go func() { defer close(watched); c.watchTopics(sctx, client, topics, cancel) }()
		err = group.Consume(sctx, topics, h)
		cancel()
		<-watched
		if errors.Is(err, sarama.ErrClosedConsumerGroup) {
			return fmt.Errorf("consume group %q: %w", c.cfg.Group, err)
		}
		if err != nil && ctx.Err() == nil {
			c.log.Warn().Err(err).Msg("consumer group session failed; joining again")
			if !sleep(ctx, c.cfg.Backoff) {
				break
			}
		}
	}
	return nil
}

// topics lists what to subscribe to, sorted.
func (c *Consumer) topics(client sarama.Client) ([]string, error) {
	if c.cfg.TopicRegex == nil {
		return c.cfg.Topics, nil
	}
	if err := client.RefreshMetadata(); err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	all, err := client.Topics()
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	var out []string
	for _, t := range all {
		// Never the dead-letter topic (a loop) nor Kafka's own (__*).
		if t != c.cfg.DeadLetterTopic && !strings.HasPrefix(t, "__") && c.cfg.TopicRegex.MatchString(t) {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out, nil
}

// watchTopics ends the session (restart) when the matched topics change.
func (c *Consumer) watchTopics(ctx context.Context, client sarama.Client, topics []string, restart func()) {
	if c.cfg.TopicRegex == nil {
		return
	}
	t := time.NewTicker(c.cfg.TopicRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now, err := c.topics(client)
		if err == nil && !slices.Equal(now, topics) {
			c.log.Info().Strs("topics", now).Msg("matching topics changed; rejoining the group")
			restart()
			return
		}
	}
}

// logErrors drains the group's error channel until the group closes.
func (c *Consumer) logErrors(group sarama.ConsumerGroup) {
	for err := range group.Errors() {
		c.log.Warn().Err(err).Msg("consumer group error")
	}
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
