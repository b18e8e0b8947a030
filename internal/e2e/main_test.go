package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/pgtest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

var (
	pg  *pgtest.Server
	bin string // the outbox-relay binary, built once
)

func TestMain(m *testing.M) {
	os.Exit(kafkatest.Main(func() int { return runMain(m) }))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "outbox-relay-e2e-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	bin = filepath.Join(dir, "outbox-relay")
	build := exec.Command("go", "build", "-o", bin, "./cmd/outbox-relay")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build outbox-relay: %v\n%s", err, out)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	pg, err = pgtest.Start(ctx, pgtest.Options{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start postgres:", err)
		return 1
	}
	defer pg.Close()
	return m.Run()
}

// proc is one outbox-relay process.
type proc struct {
	t       *testing.T
	cmd     *exec.Cmd
	logPath string
	metrics string // host:port of /metrics, /healthz, /readyz
	exited  chan struct{}
}

var procSeq int

// start runs `outbox-relay run` for env with test timings; the connection
// settings go through the environment, as a deployment would set them.
func start(t *testing.T, env *relaytest.Env, standbyPoll time.Duration, extra ...string) *proc {
	t.Helper()
	procSeq++
	p := &proc{t: t, metrics: freeAddr(t), exited: make(chan struct{}),
		logPath: filepath.Join(t.TempDir(), fmt.Sprintf("relay-%d.log", procSeq))}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"run",
		"--status-interval", "200ms", "--backoff-min", "50ms", "--backoff-max", "500ms",
		"--standby-poll", standbyPoll.String(), "--shutdown-timeout", "5s",
		"--kafka-retry-backoff", "50ms", "--kafka-timeout", "5s"}
	p.cmd = exec.Command(bin, append(args, extra...)...)
	p.cmd.Env = append(os.Environ(),
		"OUTBOX_RELAY_PG_URL="+env.URL,
		"OUTBOX_RELAY_KAFKA_BROKERS="+strings.Join(env.Kafka.Addrs(), ","),
		"OUTBOX_RELAY_SLOT="+env.Slot,
		"OUTBOX_RELAY_METRICS_ADDR="+p.metrics,
	)
	p.launch(t, "outbox-relay", logf, func(log string) {
		var notable []string
		for _, l := range strings.Split(log, "\n") {
			if !strings.Contains(l, `"level":"info"`) {
				notable = append(notable, l)
			}
		}
		t.Logf("warnings and errors of %s:\n%s", filepath.Base(p.logPath), strings.Join(notable[:min(len(notable), 20)], "\n"))
	})
	return p
}

// launch starts p.cmd writing to logf, reaps it, and at the end of the
// test stops it and, if the test failed, shows its log through onFailure.
func (p *proc) launch(t *testing.T, what string, logf *os.File, onFailure func(log string)) {
	t.Helper()
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", what, err)
	}
	go func() {
		_ = p.cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			onFailure(strings.TrimSpace(string(b)))
		}
	})
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stop ends the process gracefully (SIGTERM), killing it after 10 s.
func (p *proc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second): // the grace period, not waiting for a result
		p.kill()
	}
}

// readyz returns /readyz's status code and body (0 when unreachable).
func (p *proc) readyz() (int, string) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + p.metrics + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// waitReadyz polls /readyz until want(code, body) or ctx ends.
func (p *proc) waitReadyz(ctx context.Context, what string, want func(int, string) bool) {
	p.t.Helper()
	var code int
	var body string
	if !eventually.True(ctx, 20*time.Millisecond, func() bool {
		code, body = p.readyz()
		if want(code, body) {
			return true
		}
		select {
		case <-p.exited:
			p.t.Fatalf("relay exited before it was %s: /readyz %d %q", what, code, body)
		default:
		}
		return false
	}) {
		p.t.Fatalf("relay never %s: /readyz %d %q", what, code, body)
	}
}

func streaming(code int, _ string) bool { return code == http.StatusOK }

// metric reads one unlabelled sample from /metrics (-1 when absent).
func (p *proc) metric(name string) float64 {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
