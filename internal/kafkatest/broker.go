package kafkatest

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
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
	// default 3.
	Partitions int
	// DataDir, if set, makes the cluster persist its state there
	// (kfake.DataDir), which Restart requires.
	DataDir string
	// Port is a fixed port on 127.0.0.1; 0 picks a free one.
	Port int
	// Topics are created at start (unless DataDir already holds state).
	Topics []string
}

// Broker is a single-node kfake cluster. Its methods are safe for
// concurrent use.
type Broker struct {
	opts Options

	mu      sync.Mutex
	cluster *kfake.Cluster
	port    int // the bound port, reused by Restart
	closed  bool
}

// Start starts a single-broker kfake cluster listening on 127.0.0.1.
func Start(opts Options) (*Broker, error) {
	if opts.Partitions <= 0 {
		opts.Partitions = DefaultPartitions
	}
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

func (b *Broker) newCluster() (*kfake.Cluster, error) {
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(b.opts.Partitions),
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
	return []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port))}
}

// Cluster returns the current kfake cluster for fault injection (Fault,
// ControlKey, ...). Restart replaces it, so fetch it again afterwards;
// faults and control functions do not survive a restart.
func (b *Broker) Cluster() *kfake.Cluster {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cluster
}

// Restart closes the cluster, which flushes its state to DataDir, and
// starts a new one from that state on the same port. Connected clients see
// the connection drop and reconnect. It requires Options.DataDir.
func (b *Broker) Restart() error {
	if b.opts.DataDir == "" {
		return errors.New("kafkatest: Restart requires Options.DataDir")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("kafkatest: broker is closed")
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

// Close shuts the cluster down (persisting state when DataDir is set). It
// is idempotent.
func (b *Broker) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	b.cluster.Close()
}
