package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
