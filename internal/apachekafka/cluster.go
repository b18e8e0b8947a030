package apachekafka

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// startAttempts bounds how often Start picks new ports when one it picked
// was taken by someone else before the broker bound it.
const startAttempts = 3

// Cluster is a running Apache Kafka cluster of Options.Nodes combined
// broker+controller nodes on 127.0.0.1. Nodes are numbered from 0; node
// i has node.id i+1. Its methods are safe for concurrent use; operations
// on one node are serialised.
type Cluster struct {
	opts      Options
	dist      *dist
	dumpTo    string // when set, nodes write a class-data archive here at exit
	dir       string
	clusterID string
	tls       *tlsFiles
	nodes     []*node
	wg        sync.WaitGroup // the goroutines that wait for node processes

	mu     sync.Mutex
	closed bool
}

// StartSingle starts one combined broker+controller node: opts with
// Nodes set to 1.
func StartSingle(ctx context.Context, opts Options) (*Cluster, error) {
	opts.Nodes = 1
	return Start(ctx, opts)
}

// StartCluster starts three combined broker+controller nodes, so topics
// default to replication factor 3 with min.insync.replicas=2: opts with
// Nodes set to 3.
func StartCluster(ctx context.Context, opts Options) (*Cluster, error) {
	opts.Nodes = 3
	return Start(ctx, opts)
}

// Start fetches the Kafka release when the cache lacks it, formats KRaft
// storage for every node in a new temporary directory, starts the nodes
// on free loopback ports and returns once every node lists every node in
// its metadata (all brokers registered and unfenced). On failure nothing
// is left running; the error carries the tail of the nodes' logs.
//
// The first run per cache and JDK also trains the class-data archive
// (see doc.go), which adds a broker start of its own.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	opts.setDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	d, err := findDist(ctx, &opts)
	if err != nil {
		return nil, err
	}
	if opts.NoCDS {
		d.cds = ""
	} else if err := d.ensureCDS(ctx, &opts); err != nil {
		opts.logf("apachekafka: running without a class-data archive (slower start-up): %v", err)
		d.cds = ""
	}
	for attempt := 1; ; attempt++ {
		c, err := start(ctx, opts, d, "")
		if err == nil {
			return c, nil
		}
		if attempt >= startAttempts || !errors.Is(err, errPortTaken) {
			return nil, err
		}
		opts.logf("apachekafka: a port was taken, retrying with new ones: %v", err)
	}
}

func start(ctx context.Context, opts Options, d *dist, dumpTo string) (_ *Cluster, err error) {
	begin := time.Now()
	c := &Cluster{opts: opts, dist: d, dumpTo: dumpTo}
	if c.dir, err = os.MkdirTemp("", "apachekafka-*"); err != nil {
		return nil, fmt.Errorf("apachekafka: create temp dir: %w", err)
	}
	defer func() {
		if err != nil {
			c.Close() // c, not the nil result
		}
	}()
	if err := c.layout(); err != nil {
		return nil, err
	}
	if err := c.format(ctx); err != nil {
		return nil, err
	}
	formatted := time.Now()
	for _, n := range c.nodes {
		if err := c.spawn(n); err != nil {
			return nil, err
		}
	}
	if err := c.waitReady(ctx, c.nodes); err != nil {
		return nil, err
	}
	opts.logf("apachekafka: Kafka %s, %d node(s) ready in %s (format %s) in %s",
		d.version, len(c.nodes), time.Since(begin).Round(time.Millisecond),
		formatted.Sub(begin).Round(time.Millisecond), c.dir)
	return c, nil
}

// layout picks ports and writes every node's directory and config files.
func (c *Cluster) layout() error {
	// StorageTool's argument parser takes an id starting with '-' for an
	// option (Kafka's own generator avoids them the same way).
	for c.clusterID == "" || c.clusterID[0] == '-' {
		var idBytes [16]byte
		if _, err := rand.Read(idBytes[:]); err != nil {
			return fmt.Errorf("apachekafka: make cluster id: %w", err)
		}
		c.clusterID = base64.RawURLEncoding.EncodeToString(idBytes[:])
	}
	names := []string{ClientListener, ControllerListener}
	for _, l := range c.opts.Listeners {
		names = append(names, l.Name)
		if l.tls() && c.tls == nil {
			var err error
			if c.tls, err = makeTLS(c.dir); err != nil {
				return err
			}
		}
	}
	ports, err := freePorts(c.opts.Nodes * len(names))
	if err != nil {
		return err
	}
	for i := range c.opts.Nodes {
		n := &node{index: i, id: int32(i + 1), dir: filepath.Join(c.dir, "node-"+strconv.Itoa(i+1)), ports: map[string]int{}}
		for _, name := range names {
			n.ports[name], ports = ports[0], ports[1:]
		}
		if err := os.MkdirAll(n.dataDir(), 0o755); err != nil {
			return fmt.Errorf("apachekafka: create node dir: %w", err)
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		if err := os.WriteFile(n.configFile(), []byte(c.serverProperties(n)), 0o644); err != nil {
			return fmt.Errorf("apachekafka: write server.properties: %w", err)
		}
		if err := os.WriteFile(n.log4jFile(), []byte(log4jConfig(n.logFile())), 0o644); err != nil {
			return fmt.Errorf("apachekafka: write log4j2.properties: %w", err)
		}
	}
	return nil
}

// freePorts picks n distinct free loopback ports, holding each until all
// are picked so the kernel cannot hand out one twice.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("apachekafka: pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// format runs the KRaft storage tool for every node, in parallel.
func (c *Cluster) format(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, n := range c.nodes {
		g.Go(func() error {
			args := []string{"format", "-t", c.clusterID, "-c", n.configFile()}
			args = append(args, c.opts.scramArgs()...)
			cmd := c.java(ctx, n, storageMain, args...)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("apachekafka: format storage of node %d: %w\n%s%s", n.index, err, tail(out, 20), javaHint(string(out)))
			}
			return nil
		})
	}
	return g.Wait()
}

// Close kills every node (SIGKILL: the data is thrown away) and removes
// the cluster's directory unless Options.KeepDir. It is idempotent.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()

	var errs []error
	for _, n := range c.nodes { // signal first: unblocks a Start waiting for readiness
		if p := n.proc.Load(); p != nil && p.running() {
			if err := signalGroup(p.pid, sigKill); err != nil {
				errs = append(errs, fmt.Errorf("apachekafka: kill node %d: %w", n.index, err))
			}
		}
	}
	for _, n := range c.nodes {
		n.mu.Lock()
		if p := n.proc.Load(); p != nil {
			<-p.done
		}
		n.mu.Unlock()
	}
	c.wg.Wait()
	if c.opts.KeepDir {
		c.opts.logf("apachekafka: kept %s", c.dir)
	} else if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, fmt.Errorf("apachekafka: remove %s: %w", c.dir, err))
	}
	return errors.Join(errs...)
}

func (c *Cluster) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Nodes returns the number of nodes.
func (c *Cluster) Nodes() int { return len(c.nodes) }

// NodeID returns node i's node.id (i+1).
func (c *Cluster) NodeID(i int) int32 { return c.node(i).id }

// Index returns the index of the node with node.id id, or -1.
func (c *Cluster) Index(id int32) int {
	if id < 1 || int(id) > len(c.nodes) {
		return -1
	}
	return int(id) - 1
}

// Version returns the running Kafka release.
func (c *Cluster) Version() string { return c.dist.version }

// ClusterID returns the KRaft cluster id.
func (c *Cluster) ClusterID() string { return c.clusterID }

// Dir returns the cluster's directory: node-<id>/ holds each node's
// server.properties, data/, server.log and stdout.log.
func (c *Cluster) Dir() string { return c.dir }

// Addrs returns every node's PLAINTEXT host:port, stopped nodes included
// (clients skip them).
func (c *Cluster) Addrs() []string { return c.ListenerAddrs(ClientListener) }

// Addr returns node i's PLAINTEXT host:port.
func (c *Cluster) Addr(i int) string { return c.node(i).addr(ClientListener) }

// ListenerAddrs returns every node's host:port of the named listener
// (an Options.Listeners name or ClientListener); nil for an unknown name.
func (c *Cluster) ListenerAddrs(name string) []string {
	if name == ControllerListener {
		return nil
	}
	var addrs []string
	for _, n := range c.nodes {
		if _, ok := n.ports[name]; !ok {
			return nil
		}
		addrs = append(addrs, n.addr(name))
	}
	return addrs
}

// CAFile returns the path of the PEM CA certificate that signed the SSL
// listeners' certificate ("" without an SSL listener): what a client's
// CA option (e.g. the relay's --kafka-tls-ca) points at.
func (c *Cluster) CAFile() string {
	if c.tls == nil {
		return ""
	}
	return c.tls.caFile
}

// TLSConfig returns a client TLS configuration that trusts the cluster's
// CA only, or nil without an SSL listener.
func (c *Cluster) TLSConfig() *tls.Config {
	if c.tls == nil {
		return nil
	}
	return c.tls.clientConfig()
}

// LogTail returns the last n lines of every node's server.log, and of its
// JVM output when there is any, for a failed test to print.
func (c *Cluster) LogTail(n int) string {
	var b strings.Builder
	for _, nd := range c.nodes {
		for _, f := range []string{nd.logFile(), nd.stdoutFile()} {
			raw, err := os.ReadFile(f)
			if err != nil || len(strings.TrimSpace(string(raw))) == 0 {
				continue
			}
			fmt.Fprintf(&b, "==> node %d (node.id %d) %s <==\n%s\n", nd.index, nd.id, filepath.Base(f), tail(raw, n))
		}
	}
	return b.String()
}

// node returns node i; an index out of range is a programming error.
func (c *Cluster) node(i int) *node {
	if i < 0 || i >= len(c.nodes) {
		panic(fmt.Sprintf("apachekafka: node %d does not exist; nodes are 0 to %d", i, len(c.nodes)-1))
	}
	return c.nodes[i]
}

// running returns the nodes whose process runs.
func (c *Cluster) running() []*node {
	return slices.DeleteFunc(slices.Clone(c.nodes), func(n *node) bool { return !n.running() })
}

// javaHint names the fix for errors whose cause is the JVM.
func javaHint(out string) string {
	if strings.Contains(out, "UnsupportedClassVersionError") {
		return "\n(this Kafka needs a newer Java: install a JDK 17 or newer or set " + JavaEnv + ")"
	}
	return ""
}
