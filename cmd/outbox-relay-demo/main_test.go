package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
)

// TestDemoEndToEnd runs what `make demo` runs, bounded to two orders, so a
// broken demo fails CI instead of a newcomer's first minute.
func TestDemoEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "outbox-relay")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "../outbox-relay")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build relay: %v\n%s", err, out)
	}
	if err := os.Chdir("../.."); err != nil { // the demo reads testdata/outbox.sql
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"--relay", bin, "--transactions", "2", "--every", "10ms"}, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []string{
		"relay ready (streaming)",
		"kafka | outbox.event.order",
		"event_type=OrderShipped",
		"traceparent=00-",
		"all 6 events delivered and confirmed",
		"final status update sent",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
}

// TestDemoCtrlCStopsCleanly pins `make demo` ended with Ctrl-C: the
// terminal sends SIGINT to the whole foreground process group. The relay
// then got the terminal's SIGINT and the demo's SIGTERM, took the second as
// "exit at once", and skipped its drain and final status update. Now the
// relay runs in its own group, the demo exits 0 and the relay stops cleanly.
func TestDemoCtrlCStopsCleanly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	relayBin, demoBin := filepath.Join(dir, "outbox-relay"), filepath.Join(dir, "outbox-relay-demo")
	// TestDemoEndToEnd moves the process to the repository root: name
	// everything from the module, not from the working directory.
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	for bin, pkg := range map[string]string{relayBin: "./cmd/outbox-relay", demoBin: "./cmd/outbox-relay-demo"} {
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	var out lockedWriter
	var buf bytes.Buffer
	out.w = &buf
	demo := exec.CommandContext(ctx, demoBin, "--relay", relayBin, "--every", "50ms")
	demo.Dir = root // the demo reads testdata/outbox.sql
	demo.Stdout, demo.Stderr = &out, &out
	// Its own process group, as a terminal's foreground job has.
	demo.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	text := func() string {
		out.mu.Lock()
		defer out.mu.Unlock()
		return buf.String()
	}
	if !eventually.True(ctx, 50*time.Millisecond, func() bool { return strings.Contains(text(), "kafka | outbox.event.order") }) {
		_ = demo.Process.Kill()
		t.Fatalf("the demo delivered nothing:\n%s", text())
	}
	// Ctrl-C: SIGINT to every process of the foreground group.
	if err := syscall.Kill(-demo.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := demo.Wait(); err != nil {
		t.Fatalf("demo after Ctrl-C: %v, want exit 0\n%s", err, text())
	}
	for _, want := range []string{"final status update sent", "relay stopped cleanly", "== done"} {
		if !strings.Contains(text(), want) {
			t.Errorf("demo output after Ctrl-C lacks %q:\n%s", want, text())
		}
	}
}
