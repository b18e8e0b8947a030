package apachekafka

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// helperEnv makes TestHelperBroker start a broker and block: the parent
// test kills that process with -9 and checks that the JVM dies with it.
const helperEnv = "OUTBOX_RELAY_APACHEKAFKA_HELPER"

// fastMetadata lets test clients see new topics and leaders at once
// (kgo's default minimum metadata age is 5 s).
func fastMetadata() kgo.Opt { return kgo.MetadataMinAge(100 * time.Millisecond) }

func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestPomPinsDefaultVersion(t *testing.T) {
	want := "<kafka.version>" + DefaultVersion + "</kafka.version>"
	if !bytes.Contains(pomXML, []byte(want)) {
		t.Fatalf("pom.xml does not contain %s: keep DefaultVersion and the pom's kafka.version equal", want)
	}
}

func TestOptionsValidate(t *testing.T) {
	for name, o := range map[string]Options{
		"managed key":         {Config: map[string]string{"listeners": "PLAINTEXT://:9092"}},
		"newline in value":    {Config: map[string]string{"log.retention.ms": "1\nnode.id=7"}},
		"rf above nodes":      {Nodes: 1, ReplicationFactor: 3},
		"node config range":   {Nodes: 1, NodeConfig: map[int]map[string]string{1: {"a": "b"}}},
		"reserved listener":   {Listeners: []Listener{{Name: "CONTROLLER", Security: Plaintext}}},
		"lower-case listener": {Listeners: []Listener{{Name: "sasl", Security: SASLPlaintext}}},
		"unknown mechanism":   {Listeners: []Listener{{Name: "SASL", Security: SASLPlaintext, Mechanisms: []string{"GSSAPI"}}}},
		"password injection":  {Users: []User{{Name: "alice", Password: "x],SCRAM-SHA-256=[name=bob"}}},
	} {
		o.setDefaults()
		if err := o.validate(); err == nil {
			t.Errorf("%s: validate accepted %+v", name, o)
		}
	}
	ok := Options{Listeners: []Listener{{Name: "SASL", Security: SASLPlaintext}, {Name: "TLS", Security: SSL}},
		Users: []User{{Name: "alice", Password: "alice-secret"}}, Config: map[string]string{"auto.create.topics.enable": "false"}}
	ok.setDefaults()
	if err := ok.validate(); err != nil {
		t.Errorf("validate refused valid options: %v", err)
	}
}

func produce(ctx context.Context, cl *kgo.Client, topic string, from, n int) error {
	var recs []*kgo.Record
	for i := from; i < from+n; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(i % 4)), Value: []byte(strconv.Itoa(i))})
	}
	return cl.ProduceSync(ctx, recs...).FirstErr()
}

// consumeAll reads topic from the start until it has want records, and
// returns their values.
func consumeAll(ctx context.Context, t *testing.T, c *Cluster, topic string, want int) []string {
	t.Helper()
	cl, err := c.Client(fastMetadata(), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []string
	for len(got) < want && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				t.Logf("fetch %s/%d: %v", topic, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if len(got) != want {
		t.Fatalf("read %d records from %q, want %d", len(got), topic, want)
	}
	return got
}

// pidsUsing returns the processes whose command line mentions dir: the
// JVMs of a cluster whose directory is dir.
func pidsUsing(t *testing.T, dir string) []int {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("process check reads /proc")
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(dir+string(filepath.Separator))) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func checkNoJVMLeft(t *testing.T, dir string) {
	t.Helper()
	ctx := testContext(t, 15*time.Second)
	var left []int
	if !eventually.True(ctx, 50*time.Millisecond, func() bool { left = pidsUsing(t, dir); return len(left) == 0 }) {
		t.Fatalf("processes of %s still run: %v", dir, left)
	}
}

// TestSingle runs one broker with PLAINTEXT, SASL/SCRAM and TLS listeners
// and an authorizer, and crashes and restarts it.
func TestSingle(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	begin := time.Now()
	c := New(t, Options{
		Listeners:  []Listener{{Name: "SASL", Security: SASLPlaintext}, {Name: "TLS", Security: SSL}},
		Users:      []User{{Name: "alice", Password: "alice-secret"}},
		Authorizer: true,
	})
	t.Logf("single node ready in %s", time.Since(begin).Round(time.Millisecond))
	cl, err := c.Client(fastMetadata(), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	t.Run("AutoCreateProduceConsume", func(t *testing.T) {
		if err := produce(ctx, cl, "auto", 0, 10); err != nil {
			t.Fatalf("produce: %v", err)
		}
		consumeAll(ctx, t, c, "auto", 10)
	})
	t.Run("SCRAM", func(t *testing.T) { testSCRAM(ctx, t, c) })
	t.Run("TLS", func(t *testing.T) { testTLS(ctx, t, c) })
	t.Run("ACLDeniesWrite", func(t *testing.T) { testACL(ctx, t, c) })
	t.Run("KillAndTerminate", func(t *testing.T) {
		if err := c.Kill(0); err != nil {
			t.Fatal(err)
		}
		begin := time.Now()
		if err := c.Start(ctx, 0); err != nil {
			t.Fatal(err)
		}
		t.Logf("restarted after kill -9 in %s", time.Since(begin).Round(time.Millisecond))
		if err := produce(ctx, cl, "auto", 10, 5); err != nil {
			t.Fatalf("produce after restart: %v", err)
		}
		if err := c.Terminate(0); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitExit(ctx, 0); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx, 0); err != nil {
			t.Fatal(err)
		}
		consumeAll(ctx, t, c, "auto", 15)
	})
	t.Run("CloseLeavesNoJVM", func(t *testing.T) {
		pid := c.Pid(0)
		if len(pidsUsing(t, c.Dir())) == 0 {
			t.Fatalf("found no process using %s; the check cannot work", c.Dir())
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		checkNoJVMLeft(t, c.Dir())
		if _, err := os.Stat(c.Dir()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Close left %s: %v", c.Dir(), err)
		}
		if pid == 0 {
			t.Error("no pid recorded")
		}
	})
}

func testSCRAM(ctx context.Context, t *testing.T, c *Cluster) {
	if err := c.CreateTopic(ctx, "scram", 1, -1, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		pass string
		want error
	}{{"alice-secret", nil}, {"wrong", kerr.SaslAuthenticationFailed}} {
		mech := scram.Auth{User: "alice", Pass: tc.pass}.AsSha512Mechanism()
		cl, err := kgo.NewClient(fastMetadata(), kgo.SeedBrokers(c.ListenerAddrs("SASL")...), kgo.SASL(mech))
		if err != nil {
			t.Fatal(err)
		}
		pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		begin := time.Now()
		_, err = kmsg.NewPtrMetadataRequest().RequestWith(pctx, cl)
		if err == nil {
			err = produce(pctx, cl, "scram", 0, 1)
		}
		cancel()
		cl.Close()
		if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
			t.Errorf("password %q: produce error %v, want %v", tc.pass, err, tc.want)
		}
		t.Logf("password %q: %v after %s", tc.pass, err, time.Since(begin).Round(time.Millisecond))
	}
}

func testTLS(ctx context.Context, t *testing.T, c *Cluster) {
	addr := c.ListenerAddrs("TLS")[0]
	// Without the cluster's CA the handshake fails on the certificate.
	conn, err := tls.Dial("tcp", addr, &tls.Config{MinVersion: tls.VersionTLS12})
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("dial without the CA: %v, want an unknown-authority error", err)
	}
	if conn != nil {
		conn.Close()
	}
	if raw, err := os.ReadFile(c.CAFile()); err != nil || !bytes.Contains(raw, []byte("BEGIN CERTIFICATE")) {
		t.Fatalf("CAFile %q: %v", c.CAFile(), err)
	}
	cl, err := kgo.NewClient(fastMetadata(), kgo.SeedBrokers(c.ListenerAddrs("TLS")...), kgo.DialTLSConfig(c.TLSConfig()),
		kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := produce(ctx, cl, "tls", 0, 3); err != nil {
		t.Fatalf("produce over TLS: %v", err)
	}
	consumeAll(ctx, t, c, "tls", 3)
}

func testACL(ctx context.Context, t *testing.T, c *Cluster) {
	for _, topic := range []string{"denied", "allowed"} {
		if err := c.CreateTopic(ctx, topic, 1, -1, nil); err != nil {
			t.Fatal(err)
		}
	}
	admin, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	req := kmsg.NewPtrCreateACLsRequest()
	cr := kmsg.NewCreateACLsRequestCreation()
	cr.ResourceType = kmsg.ACLResourceTypeTopic
	cr.ResourceName = "denied"
	cr.ResourcePatternType = kmsg.ACLResourcePatternTypeLiteral
	cr.Principal, cr.Host = "User:alice", "*"
	cr.Operation, cr.PermissionType = kmsg.ACLOperationWrite, kmsg.ACLPermissionTypeDeny
	req.Creations = append(req.Creations, cr)
	resp, err := req.RequestWith(ctx, admin)
	if err == nil {
		err = kerr.ErrorForCode(resp.Results[0].ErrorCode)
	}
	if err != nil {
		t.Fatalf("create ACL: %v", err)
	}
	cl, err := kgo.NewClient(fastMetadata(), kgo.SeedBrokers(c.ListenerAddrs("SASL")...),
		kgo.SASL(scram.Auth{User: "alice", Pass: "alice-secret"}.AsSha512Mechanism()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := produce(ctx, cl, "allowed", 0, 1); err != nil {
		t.Errorf("produce to a topic without ACLs: %v", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := produce(pctx, cl, "denied", 0, 1); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Errorf("produce to the denied topic: %v, want %v", err, kerr.TopicAuthorizationFailed)
	}
}

// TestCluster runs three nodes, kills the leader of a partition while
// producing with acks=all, and restarts it.
func TestCluster(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	begin := time.Now()
	c := New(t, Options{Nodes: 3})
	t.Logf("3 nodes ready in %s", time.Since(begin).Round(time.Millisecond))
	if err := c.CreateTopic(ctx, "events", 3, 3, nil); err != nil {
		t.Fatal(err)
	}
	cl, err := c.Client(fastMetadata())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := produce(ctx, cl, "events", 0, 30); err != nil {
		t.Fatalf("produce: %v", err)
	}
	leaders, err := c.Leaders(ctx, "events")
	if err != nil {
		t.Fatal(err)
	}
	victim := leaders[0]
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	begin = time.Now()
	if err := produce(ctx, cl, "events", 30, 30); err != nil {
		t.Fatalf("produce with node %d killed: %v", victim, err)
	}
	t.Logf("produced 30 records in %s after killing node %d, the leader of partition 0", time.Since(begin).Round(time.Millisecond), victim)
	if !eventually.True(ctx, 50*time.Millisecond, func() bool {
		l, err := c.Leaders(ctx, "events")
		return err == nil && l[0] != victim && l[0] != -1
	}) {
		t.Fatalf("partition 0 kept leader %d after it was killed", victim)
	}
	begin = time.Now()
	if err := c.Start(ctx, victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("node %d back in %s", victim, time.Since(begin).Round(time.Millisecond))
	if err := c.Restart(ctx, (victim+1)%3); err != nil {
		t.Fatal(err)
	}
	if err := produce(ctx, cl, "events", 60, 30); err != nil {
		t.Fatalf("produce after restarts: %v", err)
	}
	if got := consumeAll(ctx, t, c, "events", 90); len(got) != 90 {
		t.Fatalf("got %d records", len(got))
	}
	dir := c.Dir()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	checkNoJVMLeft(t, dir)
}

// TestKilledTestLeavesNoJVM kills (-9) a test process that runs a broker
// and checks that the broker's JVM dies with it (the parent-death signal).
func TestKilledTestLeavesNoJVM(t *testing.T) {
	if !Enabled() {
		t.Skipf("Apache Kafka tests are off; set %s=1 (make test-kafka) to run them", EnableEnv)
	}
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux-only")
	}
	ctx := testContext(t, 3*time.Minute)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperBroker$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait() //nolint:errcheck // killed on purpose
	defer cmd.Process.Kill()
	dirLine := regexp.MustCompile(`^HELPER-DIR (\S+)$`)
	var dir string
	sc := bufio.NewScanner(out)
	for dir == "" && sc.Scan() {
		if m := dirLine.FindStringSubmatch(sc.Text()); m != nil {
			dir = m[1]
		}
	}
	if dir == "" {
		t.Fatalf("the helper printed no cluster dir (scan: %v)", sc.Err())
	}
	if len(pidsUsing(t, dir)) == 0 {
		t.Fatalf("no JVM runs from %s", dir)
	}
	if err := cmd.Process.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	checkNoJVMLeft(t, dir)
	os.RemoveAll(dir) // the killed helper could not
}

// TestHelperBroker is TestKilledTestLeavesNoJVM's child process.
func TestHelperBroker(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for TestKilledTestLeavesNoJVM")
	}
	ctx := testContext(t, 2*time.Minute)
	c, err := StartSingle(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Printf("HELPER-DIR %s\n", strings.TrimSpace(c.Dir()))
	<-ctx.Done() // the parent kills this process long before
}
