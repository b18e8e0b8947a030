package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-relay/outbox-relay/internal/apachekafka"
)

// Timeouts of the Apache Kafka backend.
const (
	// sharedStartTimeout bounds the start of a shared cluster, including
	// the first run's Maven fetch of the Kafka jars.
	sharedStartTimeout = 20 * time.Minute
	// wipeTimeout bounds deleting the previous test's topics (and
	// starting the node again if a test left it stopped).
	wipeTimeout = time.Minute
	// restartTimeout bounds Broker.Restart on Apache Kafka.
	restartTimeout = 2 * time.Minute
)

// Apache reports whether New runs tests against Apache Kafka
// (OUTBOX_RELAY_APACHE_KAFKA=1, as `make test-kafka` sets) instead of
// kfake.
func Apache() bool { return apachekafka.Enabled() }

// BackendName is "kfake" or "Apache Kafka <version>", for messages.
func BackendName() string {
	if !Apache() {
		return "kfake"
	}
	v := os.Getenv(apachekafka.VersionEnv)
	if v == "" {
		v = apachekafka.DefaultVersion
	}
	return "Apache Kafka " + v
}

// RequireKfake skips the test on Apache Kafka: call it first in a test
// that injects faults through Broker.Cluster (ControlKey, Fault) or
// otherwise needs kfake. why says what the test needs kfake for; it goes
// into the skip message. Faults that a real cluster has are tested
// against Apache Kafka in internal/kafkafault.
func RequireKfake(t testing.TB, why string) {
	t.Helper()
	if Apache() {
		t.Skipf("needs kfake (%s); this run uses %s", why, BackendName())
	}
}

// shared holds the package's Apache Kafka clusters, one per partition
// count (num.partitions is static broker configuration, and auto-created
// topics must have the partitions a test asks for). Main closes them.
var shared struct {
	mu       sync.Mutex
	inMain   bool
	clusters map[int]*sharedCluster
}

// sharedCluster is one single-node cluster shared by the package's tests,
// one test at a time: the lease.
type sharedCluster struct {
	cluster *apachekafka.Cluster
	err     error // the start error; every later New fails with it

	lease  chan struct{} // holds one token while a test uses the cluster
	mu     sync.Mutex
	holder string // the name of the test holding the lease
}

// Main runs a test package's tests, run (usually a function calling
// m.Run or pgtest.Main), and closes the Apache Kafka clusters that New
// started for the package:
//
//	func TestMain(m *testing.M) {
//		os.Exit(kafkatest.Main(func() int { return pgtest.Main(m, &pg) }))
//	}
//
// On kfake it only runs run. New refuses to start Apache Kafka in a
// package whose TestMain does not go through Main, so no cluster outlives
// its package.
func Main(run func() int) int {
	shared.mu.Lock()
	shared.inMain = true
	shared.mu.Unlock()
	defer closeShared()
	return run()
}

func closeShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	shared.inMain = false
	for p, sc := range shared.clusters {
		if sc.cluster != nil {
			if err := sc.cluster.Close(); err != nil {
				fmt.Fprintf(os.Stderr, "kafkatest: close Apache Kafka (%d partitions): %v\n", p, err)
			}
		}
		delete(shared.clusters, p)
	}
}

// sharedFor returns the package's cluster for partitions, starting it on
// first use.
func sharedFor(t testing.TB, partitions int) (*sharedCluster, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.inMain {
		return nil, errors.New("Apache Kafka is shared per test package: run the package's tests through kafkatest.Main in its TestMain")
	}
	if sc := shared.clusters[partitions]; sc != nil {
		return sc, sc.err
	}
	sc := &sharedCluster{lease: make(chan struct{}, 1)}
	if shared.clusters == nil {
		shared.clusters = map[int]*sharedCluster{}
	}
	shared.clusters[partitions] = sc
	ctx, cancel := context.WithTimeout(context.Background(), sharedStartTimeout)
	defer cancel()
	begin := time.Now()
	sc.cluster, sc.err = apachekafka.StartSingle(ctx, apachekafka.Options{
		Version:    os.Getenv(apachekafka.VersionEnv),
		Partitions: partitions,
		KeepDir:    os.Getenv(apachekafka.KeepEnv) == "1",
		Logf:       stderrLogf,
	})
	if sc.err != nil {
		sc.err = fmt.Errorf("start Apache Kafka: %w", sc.err)
		return sc, sc.err
	}
	t.Logf("kafkatest: started the package's Apache Kafka %s (num.partitions=%d) in %s",
		sc.cluster.Version(), partitions, time.Since(begin).Round(time.Millisecond))
	return sc, nil
}

// stderrLogf gives a shared cluster's progress lines (which outlive the
// test that started it) to stderr under -v.
func stderrLogf(format string, args ...any) {
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
	}
}

// acquire takes the cluster for test t until the returned release runs.
// A subtest of the holder (or the holder again) shares the holder's lease
// and its topics; any other test waits for the lease, then finds every
// topic of the previous test deleted and the node running.
func (sc *sharedCluster) acquire(t testing.TB) (release func(), err error) {
	name := t.Name()
	sc.mu.Lock()
	if h := sc.holder; h != "" && (name == h || strings.HasPrefix(name, h+"/")) {
		sc.mu.Unlock()
		return func() {}, nil
	}
	sc.mu.Unlock()
	select {
	case sc.lease <- struct{}{}:
	case <-t.Context().Done():
		return nil, fmt.Errorf("wait for the shared Apache Kafka: %w", t.Context().Err())
	}
	sc.mu.Lock()
	sc.holder = name
	sc.mu.Unlock()
	release = func() {
		sc.mu.Lock()
		sc.holder = ""
		sc.mu.Unlock()
		<-sc.lease
	}
	ctx, cancel := context.WithTimeout(context.Background(), wipeTimeout)
	defer cancel()
	if err := sc.reset(ctx); err != nil {
		release()
		return nil, err
	}
	return release, nil
}

// reset starts the node if a test left it stopped and deletes every
// non-internal topic, waiting until the broker no longer lists them.
func (sc *sharedCluster) reset(ctx context.Context) error {
	if !sc.cluster.Running(0) {
		if err := sc.cluster.Start(ctx, 0); err != nil {
			return fmt.Errorf("start the stopped Apache Kafka node: %w", err)
		}
	}
	cl, err := sc.cluster.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var (
		last   []string
		delErr error
	)
	for {
		topics, err := userTopics(ctx, cl)
		if err == nil && len(topics) == 0 {
			return nil
		}
		if err == nil && (delErr != nil || !slices.Equal(topics, last)) {
			delErr = deleteTopics(ctx, cl, topics)
			last, err = topics, delErr
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("delete the previous test's topics %v: %w (last error: %v)", topics, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// userTopics lists the cluster's non-internal topics.
func userTopics(ctx context.Context, cl *kgo.Client) ([]string, error) {
	req := kmsg.NewPtrMetadataRequest() // nil Topics: all of them
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	var topics []string
	for _, t := range resp.Topics {
		if t.Topic != nil && !t.IsInternal {
			topics = append(topics, *t.Topic)
		}
	}
	slices.Sort(topics)
	return topics, nil
}

func deleteTopics(ctx context.Context, cl *kgo.Client, topics []string) error {
	req := kmsg.NewPtrDeleteTopicsRequest()
	req.TimeoutMillis = 30000
	for _, name := range topics {
		rt := kmsg.NewDeleteTopicsRequestTopic()
		rt.Topic = kmsg.StringPtr(name)
		req.Topics = append(req.Topics, rt)
		req.TopicNames = append(req.TopicNames, name) // v0-v5
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("delete topics: %w", err)
	}
	var errs []error
	for _, rt := range resp.Topics {
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil && !errors.Is(err, kerr.UnknownTopicOrPartition) {
			errs = append(errs, fmt.Errorf("delete topic %q: %w", deref(rt.Topic), err))
		}
	}
	return errors.Join(errs...)
}

// serverLog is the single node's server.log (see apachekafka.Cluster.Dir).
func serverLog(c *apachekafka.Cluster) string {
	return filepath.Join(c.Dir(), "node-1", "server.log")
}

func logSize(c *apachekafka.Cluster) int64 {
	fi, err := os.Stat(serverLog(c))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince returns the last n lines the broker logged since this broker
// was leased, or the node's log tail when that fails.
func (b *Broker) logSince(n int) string {
	f, err := os.Open(serverLog(b.apache))
	if err == nil {
		defer f.Close()
		var raw []byte
		if _, err = f.Seek(b.logFrom, io.SeekStart); err == nil {
			raw, err = io.ReadAll(f)
		}
		if err == nil && len(raw) > 0 {
			lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
			return strings.Join(lines[max(0, len(lines)-n):], "\n")
		}
	}
	return b.apache.LogTail(n)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// newApache is New on Apache Kafka: the package's shared cluster for
// opts.Partitions, leased to t, emptied of the previous test's topics,
// with opts.Topics created.
func newApache(t testing.TB, opts Options) (*Broker, error) {
	if opts.Port != 0 {
		return nil, errors.New("Options.Port needs kfake; Apache Kafka picks its own ports")
	}
	if opts.NoAutoCreate {
		return nil, errors.New("Options.NoAutoCreate needs kfake: the shared Apache Kafka clusters auto-create topics " +
			"(call RequireKfake; internal/kafkafault has a cluster with auto-create off)")
	}
	sc, err := sharedFor(t, opts.Partitions)
	if err != nil {
		return nil, err
	}
	release, err := sc.acquire(t)
	if err != nil {
		return nil, err
	}
	b := &Broker{opts: opts, apache: sc.cluster, release: release, logFrom: logSize(sc.cluster)}
	ctx, cancel := context.WithTimeout(t.Context(), wipeTimeout)
	defer cancel()
	for _, topic := range opts.Topics {
		if err := b.CreateTopic(ctx, topic, int32(opts.Partitions), nil); err != nil {
			b.Close()
			return nil, err
		}
	}
	return b, nil
}
