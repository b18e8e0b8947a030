package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/outbox-relay/outbox-relay/internal/apachekafka"
)

// DefaultPartitions is the partition count of auto-created and seeded
// topics when Options.Partitions is zero.
const DefaultPartitions = 3

// rebindTimeout bounds how long Restart retries binding the old port.
const rebindTimeout = 5 * time.Second

// Options configures a Broker. The zero value is a single in-memory broker
// on a free port.
type Options struct {
	// Partitions is the partition count for auto-created and seed topics;
	// default 3. On Apache Kafka it picks the package's shared cluster
	// whose num.partitions it is.
	Partitions int
	// DataDir, if set, makes the cluster persist its state there
	// (kfake.DataDir), which Restart requires. Apache Kafka always keeps
	// its data (in its own directory); there DataDir only says that the
	// test restarts the broker.
	DataDir string
	// Port is a fixed port on 127.0.0.1; 0 picks a free one. kfake only.
	Port int
	// Topics are created at start (unless DataDir already holds state).
	Topics []string
	// NoAutoCreate makes the broker refuse records and metadata requests
	// for a topic nobody created (UNKNOWN_TOPIC_OR_PARTITION), as brokers
	// with auto.create.topics.enable=false do; create topics with
	// CreateTopic. kfake only: New fails on Apache Kafka, so call
	// RequireKfake first.
	NoAutoCreate bool
}

// Broker is a single-node kfake cluster or, in tests run with
// OUTBOX_RELAY_APACHE_KAFKA=1, a lease on the test package's shared
// single-node Apache Kafka cluster (see New). Its methods are safe for
// concurrent use.
type Broker struct {
	opts Options

	mu      sync.Mutex
	cluster *kfake.Cluster // kfake; nil on Apache Kafka
	port    int            // the bound port, reused by Restart
	closed  bool

	apache  *apachekafka.Cluster // Apache Kafka; nil on kfake
	release func()               // gives the shared cluster back (Apache Kafka)
	logFrom int64                // the size of the node's server.log when leased
}

// Start starts a single-broker kfake cluster listening on 127.0.0.1.
// (Tests get Apache Kafka through New.)
func Start(opts Options) (*Broker, error) {
	opts.setDefaults()
	b := &Broker{opts: opts, port: opts.Port}
	c, err := b.newCluster()
	if err != nil {
		return nil, err
	}
	addrs := c.ListenAddrs()
	if len(addrs) != 1 {
		c.Close()
		return nil, fmt.Errorf("kafkatest: expected one listen address, got %v", addrs)
	}
	_, port, err := net.SplitHostPort(addrs[0])
	if err == nil {
		b.port, err = strconv.Atoi(port)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("kafkatest: parse listen address %q: %w", addrs[0], err)
	}
	b.cluster = c
	return b, nil
}

func (o *Options) setDefaults() {
	if o.Partitions <= 0 {
		o.Partitions = DefaultPartitions
	}
}

func (b *Broker) newCluster() (*kfake.Cluster, error) {
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(b.opts.Partitions),
	}
	if !b.opts.NoAutoCreate {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	if len(b.opts.Topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(b.opts.Partitions), b.opts.Topics...))
	}
	if b.opts.DataDir != "" {
		opts = append(opts, kfake.DataDir(b.opts.DataDir))
	}
	if b.port != 0 {
		opts = append(opts, kfake.Ports(b.port))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: start kfake: %w", err)
	}
	return c, nil
}

// Addrs returns the broker's host:port seed addresses.
func (b *Broker) Addrs() []string {
	if b.apache != nil {
		return b.apache.Addrs()
	}
	return []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port))}
}

// IsApache reports whether the broker is Apache Kafka.
func (b *Broker) IsApache() bool { return b.apache != nil }

// ApacheCluster returns the Apache Kafka cluster behind the broker, nil
// on kfake. It is shared by the package's tests, one at a time: a test
// may stop and start its node (the next test finds it running again) but
// should leave broker-wide settings as it found them.
func (b *Broker) ApacheCluster() *apachekafka.Cluster { return b.apache }

// Cluster returns the current kfake cluster for fault injection (Fault,
// ControlKey, ...). Restart replaces it, so fetch it again afterwards;
// faults and control functions do not survive a restart.
//
// There is no kfake cluster on Apache Kafka: a test that calls Cluster
// must first call RequireKfake, and Cluster panics when it did not.
func (b *Broker) Cluster() *kfake.Cluster {
	if b.apache != nil {
		panic("kafkatest: Broker.Cluster is kfake's fault-injection handle and this test runs on " + BackendName() +
			"; call kafkatest.RequireKfake(t, why) at the top of the test")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cluster
}

// CreateTopic creates a topic with partitions partitions and per-topic
// configs such as "max.message.bytes", on either broker. On Apache Kafka
// it waits until every partition has a leader. A topic that exists
// already is left as it is.
func (b *Broker) CreateTopic(ctx context.Context, topic string, partitions int32, configs map[string]string) error {
	var err error
	if b.apache != nil {
		err = b.apache.CreateTopic(ctx, topic, partitions, -1, configs)
	} else {
		err = b.Cluster().CreateTopic(topic, partitions, configs)
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("kafkatest: create topic %q: %w", topic, err)
	}
	return nil
}

// Restart stops the broker and starts it again on the same address with
// its data; connected clients see the connection drop and reconnect. It
// requires Options.DataDir.
//
// On kfake it closes the cluster, which flushes its state to DataDir, and
// starts a new one from that state. On Apache Kafka it stops the node
// gracefully (SIGTERM: a controlled shutdown) and starts it again, and
// returns once the node is ready.
func (b *Broker) Restart() error {
	if b.opts.DataDir == "" {
		return errors.New("kafkatest: Restart requires Options.DataDir")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("kafkatest: broker is closed")
	}
	if b.apache != nil {
		ctx, cancel := context.WithTimeout(context.Background(), restartTimeout)
		defer cancel()
		if err := b.apache.Restart(ctx, 0); err != nil {
			return fmt.Errorf("kafkatest: restart Apache Kafka: %w", err)
		}
		return nil
	}
	b.cluster.Close()

	// The listener is closed and Go listeners set SO_REUSEADDR, so the
	// port is normally free at once; retry briefly in case it is not.
	deadline := time.Now().Add(rebindTimeout)
	for {
		c, err := b.newCluster()
		if err == nil {
			b.cluster = c
			return nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close shuts the kfake cluster down (persisting state when DataDir is
// set), or gives the shared Apache Kafka cluster back for the next test.
// It is idempotent.
func (b *Broker) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	if b.apache != nil {
		b.release()
		return
	}
	b.cluster.Close()
}
