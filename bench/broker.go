package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-relay/outbox-relay/internal/apachekafka"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
)

// The -broker choices.
const (
	brokerKfake  = "kfake"
	brokerApache = "apache"
)

// apacheJVMFlags are the heap and GC flags of Kafka's own start scripts
// (kafka-server-start.sh, kafka-run-class.sh), not the harness's
// start-up-friendly defaults (C1 only, serial GC): the bench reports the
// broker's CPU, and C1-only code would inflate it against a deployment.
func apacheJVMFlags() []string {
	return []string{
		"-Xms1g", "-Xmx1g",
		"-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
		"-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
	}
}

// broker is the Kafka one relay run produces to: the topic exists with
// its partitions and holds no records.
type broker interface {
	Addrs() []string
	// cpu is the user+system CPU the broker's process has used so far;
	// the difference over a run is the broker's share of it.
	cpu() (time.Duration, error)
	Close()
}

// kfakeBroker is kafkatest's in-process kfake: its CPU is this process's,
// which also holds the bench's pollers (and, in the latency scenario, the
// writer and the consumer).
type kfakeBroker struct{ *kafkatest.Broker }

func (kfakeBroker) cpu() (time.Duration, error) { return selfCPU(), nil }

// apacheBroker is one relay run on the suite's Apache Kafka node; the
// suite owns the node, so Close leaves it running.
type apacheBroker struct{ c *apachekafka.Cluster }

func (b apacheBroker) Addrs() []string             { return b.c.Addrs() }
func (b apacheBroker) cpu() (time.Duration, error) { return procCPU(b.c.Pid(0)) }
func (apacheBroker) Close()                        {}

// freshBroker returns an empty topic for the next relay run: a new kfake
// (it starts in milliseconds), or the suite's Apache Kafka node with the
// topic deleted and created again.
func (s *suite) freshBroker(ctx context.Context) (broker, error) {
	if s.kafka == nil {
		b, err := kafkatest.Start(kafkatest.Options{Partitions: partitions, Topics: []string{topic}})
		if err != nil {
			return nil, err
		}
		return kfakeBroker{b}, nil
	}
	if err := recreateTopic(ctx, s.kafka); err != nil {
		return nil, err
	}
	return apacheBroker{s.kafka}, nil
}

// startApache starts the suite's single Apache Kafka node. One JVM serves
// every scenario and run, each run on a re-created topic: a JVM takes
// 5-10 s to start and compiles its hot paths for tens of seconds after
// that (see warmUp), so a JVM per run would mostly time its own start.
func startApache(ctx context.Context, logf func(string, ...any)) (*apachekafka.Cluster, error) {
	c, err := apachekafka.StartSingle(ctx, apachekafka.Options{
		Partitions: partitions,
		JVMFlags:   apacheJVMFlags(),
		Config: map[string]string{
			// Delete a dropped topic's files at once, between runs, not
			// a minute later during one.
			"log.segment.delete.delay.ms": "0",
		},
		Logf: logf,
	})
	if err != nil {
		return nil, fmt.Errorf("start Apache Kafka (needs Java 17+, and Maven on the first run; see README: Development): %w", err)
	}
	if err := c.CreateTopic(ctx, topic, partitions, -1, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// The broker's warm-up: unmeasured latency runs of warmupRound each until
// the JVM's JIT compilers use less than jitQuiet of CPU in one, for at most
// -broker-warmup.
const (
	warmupRound = 15 * time.Second
	jitQuiet    = 500 * time.Millisecond
)

// warmUp runs the latency scenario until the broker's JIT is quiet, and
// throws the figures away: a fresh JVM interprets and compiles the
// broker's produce and fetch paths for its first minute or more on this
// 2-core box (its JIT compilers used 15-30 s of CPU in the first minute
// of 5,000 events/s runs), so timing it would measure the JIT, not the
// broker users run, which has been up for days. The relay, its sarama producer and the
// consumer warm exactly the paths the scenarios time.
func (s *suite) warmUp(ctx context.Context, limit time.Duration) error {
	started := time.Now()
	for round := 1; time.Since(started) < limit; round++ {
		jit0, err := jitCPU(s.kafka.Pid(0))
		if err != nil {
			return err
		}
		s.logf("apache: warm-up run %d (%s, unmeasured)", round, warmupRound)
		if _, err := s.latencyScenario(ctx, s.relay, s.o.rate, warmupRound, ""); err != nil {
			return fmt.Errorf("warm Apache Kafka up (-broker-warmup): %w", err)
		}
		jit, err := jitCPU(s.kafka.Pid(0))
		if err != nil {
			return err
		}
		s.warmJIT = jit - jit0
		s.logf("apache: the JIT compilers used %s of CPU in warm-up run %d", s.warmJIT.Round(time.Millisecond), round)
		if s.warmJIT < jitQuiet {
			return nil
		}
	}
	s.logf("apache: the JIT is still compiling after the -broker-warmup limit %s; the figures include some of it", limit)
	return nil
}

// recreateTopic deletes the topic and creates it again, retrying while
// the broker still knows the old one.
func recreateTopic(ctx context.Context, c *apachekafka.Cluster) error {
	cl, err := c.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	req := kmsg.NewPtrDeleteTopicsRequest()
	req.TimeoutMillis = 30000
	rt := kmsg.NewDeleteTopicsRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics, req.TopicNames = append(req.Topics, rt), []string{topic}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("delete topic %q: %w", topic, err)
	}
	for _, t := range resp.Topics {
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil && !errors.Is(err, kerr.UnknownTopicOrPartition) {
			return fmt.Errorf("delete topic %q: %w", topic, err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.CreateTopic(ctx, topic, partitions, -1, nil)
		if err == nil || !errors.Is(err, kerr.TopicAlreadyExists) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// describeBroker says which broker the figures are for.
func (s *suite) describeBroker() string {
	if s.kafka == nil {
		return "broker: kfake, in this process (broker CPU = this process's CPU: kfake, the bench's pollers, the latency writer and consumer)"
	}
	return fmt.Sprintf("broker: Apache Kafka %s, one KRaft node (pid %d), JVM flags %s; JIT CPU in the last warm-up run %s (broker CPU = the JVM's utime+stime)",
		s.kafka.Version(), s.kafka.Pid(0), strings.Join(apacheJVMFlags(), " "), s.warmJIT.Round(time.Millisecond))
}

// brokerCPULabel is the broker CPU column's header.
func (s *suite) brokerCPULabel() string {
	if s.kafka == nil {
		return "broker CPU s (kfake: bench process)"
	}
	return "broker CPU s (Kafka JVM)"
}
