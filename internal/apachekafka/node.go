package apachekafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	sigKill = syscall.SIGKILL
	sigTerm = syscall.SIGTERM
	// stopTimeout bounds a graceful stop; then the node is killed.
	stopTimeout = 30 * time.Second
	// killTimeout bounds the wait for a killed process to be reaped.
	killTimeout = 10 * time.Second
)

// errPortTaken marks a start that failed because a port it picked was
// bound by someone else in the meantime.
var errPortTaken = errors.New("port already in use")

type node struct {
	index int
	id    int32
	dir   string
	ports map[string]int // listener name -> port, fixed for the node's life

	mu   sync.Mutex           // serialises Start, Stop, Kill, Terminate of this node
	proc atomic.Pointer[proc] // the latest process; nil before the first start
}

func (n *node) dataDir() string    { return filepath.Join(n.dir, "data") }
func (n *node) configFile() string { return filepath.Join(n.dir, "server.properties") }
func (n *node) log4jFile() string  { return filepath.Join(n.dir, "log4j2.properties") }
func (n *node) logFile() string    { return filepath.Join(n.dir, "server.log") }
func (n *node) stdoutFile() string { return filepath.Join(n.dir, "stdout.log") }

func (n *node) addr(listener string) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.ports[listener]))
}

func (n *node) running() bool {
	p := n.proc.Load()
	return p != nil && p.running()
}

// proc is one JVM run of a node.
type proc struct {
	pid  int
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // the exit status; read after done
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// java builds a JVM command for node n that dies with the calling thread
// (see sysProcAttr) and lives in its own process group.
func (c *Cluster) java(ctx context.Context, n *node, main string, args ...string) *exec.Cmd {
	flags := slices.Clone(c.opts.JVMFlags)
	if len(flags) == 0 {
		flags = DefaultJVMFlags()
	}
	switch {
	case c.dumpTo != "" && main == brokerMain:
		flags = append(flags, "-XX:ArchiveClassesAtExit="+c.dumpTo)
	case c.dist.cds != "":
		flags = append(flags, "-XX:SharedArchiveFile="+c.dist.cds, "-Xshare:auto")
	}
	argv := append(flags,
		"-Dlog4j2.configurationFile="+n.log4jFile(),
		"-Dkafka.logs.dir="+n.dir,
		"-cp", c.dist.classpath, main)
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, c.dist.java, argv...)
	cmd.Dir = n.dir
	cmd.SysProcAttr = sysProcAttr()
	return cmd
}

// spawn starts node n's broker. The process is started and waited for by
// one goroutine that stays locked to its OS thread, because the kernel
// sends the parent-death signal when the starting thread exits, not the
// process. c.wg owns that goroutine.
func (c *Cluster) spawn(n *node) error {
	out, err := os.OpenFile(n.stdoutFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("apachekafka: open stdout.log: %w", err)
	}
	cmd := c.java(context.Background(), n, brokerMain, n.configFile())
	cmd.Stdout, cmd.Stderr = out, out
	p := &proc{done: make(chan struct{})}
	started := make(chan error, 1)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(p.done)
		defer out.Close()
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := cmd.Start(); err != nil {
			p.err = err
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("apachekafka: start node %d: %w", n.index, err)
	}
	n.proc.Store(p)
	return nil
}

// exitError describes a node that exited while it should be starting.
func (c *Cluster) exitError(n *node, p *proc) error {
	raw, _ := os.ReadFile(n.logFile())
	out, _ := os.ReadFile(n.stdoutFile())
	both := string(raw) + string(out)
	err := fmt.Errorf("apachekafka: node %d exited during start-up (%v)%s\n%s", n.index, p.err, javaHint(both), c.LogTail(30))
	if strings.Contains(both, "Address already in use") {
		return errors.Join(errPortTaken, err)
	}
	return err
}

// Start starts node i again after Stop, Kill or Terminate (waiting for a
// terminated node to exit first), on the same ports and data, and
// returns once every running node lists it in its metadata and it lists
// them. Starting a running node is an error.
func (c *Cluster) Start(ctx context.Context, i int) error {
	n := c.node(i)
	n.mu.Lock()
	defer n.mu.Unlock()
	if c.isClosed() {
		return errors.New("apachekafka: cluster is closed")
	}
	if p := n.proc.Load(); p != nil {
		select {
		case <-p.done:
		case <-ctx.Done():
			return fmt.Errorf("apachekafka: start node %d: wait for the old process to exit: %w", i, ctx.Err())
		}
	}
	if n.running() {
		return fmt.Errorf("apachekafka: node %d is running; Stop or Kill it first", i)
	}
	if err := c.spawn(n); err != nil {
		return err
	}
	return c.waitReady(ctx, []*node{n})
}

// Restart stops node i gracefully and starts it again.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	if err := c.Stop(i); err != nil {
		return err
	}
	return c.Start(ctx, i)
}

// Stop stops node i gracefully (SIGTERM: controlled shutdown, leadership
// moves away) and waits for it to exit; after 30 s it is killed. Stopping
// a node that is not running does nothing.
func (c *Cluster) Stop(i int) error {
	n := c.node(i)
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.proc.Load()
	if p == nil || !p.running() {
		return nil
	}
	if err := signalGroup(p.pid, sigTerm); err != nil {
		return fmt.Errorf("apachekafka: stop node %d: %w", i, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	c.opts.logf("apachekafka: node %d did not stop within %s; killing it", i, stopTimeout)
	return c.kill(n, p)
}

// Kill kills node i (SIGKILL to its process group, like a crash or
// kill -9) and waits until it has exited. Killing a node that is not
// running does nothing.
func (c *Cluster) Kill(i int) error {
	n := c.node(i)
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.proc.Load()
	if p == nil || !p.running() {
		return nil
	}
	return c.kill(n, p)
}

func (c *Cluster) kill(n *node, p *proc) error {
	if err := signalGroup(p.pid, sigKill); err != nil {
		return fmt.Errorf("apachekafka: kill node %d: %w", n.index, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(killTimeout):
		return fmt.Errorf("apachekafka: node %d (pid %d) still runs %s after SIGKILL", n.index, p.pid, killTimeout)
	}
}

// Terminate sends node i SIGTERM, as a service manager would, and returns
// at once: the node shuts down in the background (WaitExit waits for
// that). Terminating a node that is not running does nothing.
func (c *Cluster) Terminate(i int) error {
	n := c.node(i)
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.proc.Load()
	if p == nil || !p.running() {
		return nil
	}
	if err := signalGroup(p.pid, sigTerm); err != nil {
		return fmt.Errorf("apachekafka: terminate node %d: %w", i, err)
	}
	return nil
}

// WaitExit waits until node i's process has exited (it returns at once
// for a node that is not running).
func (c *Cluster) WaitExit(ctx context.Context, i int) error {
	p := c.node(i).proc.Load()
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("apachekafka: wait for node %d to exit: %w", i, ctx.Err())
	}
}

// Running reports whether node i's process runs.
func (c *Cluster) Running(i int) bool { return c.node(i).running() }

// Pid returns the process id of node i's JVM, or 0 before its first start.
func (c *Cluster) Pid(i int) int {
	if p := c.node(i).proc.Load(); p != nil {
		return p.pid
	}
	return 0
}
