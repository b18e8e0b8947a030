package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestLinkerDropsUnusedMethods: nothing in the relay calls methods by name
// through reflect (reflect.Value.MethodByName, as text/template does). One
// such call makes the linker keep every exported method of every type the
// binary keeps: it was 5 MB of a 30.6 MB binary and 2 MB of its resident
// pages (docs/benchmarks.md, "Resident pages of the binary"). The linker's
// -dumpdep output marks such a function <ReflectMethod>.
func TestLinkerDropsUnusedMethods(t *testing.T) {
	if testing.Short() {
		t.Skip("links the binary (about 4 s)")
	}
	cmd := exec.Command("go", "build", "-ldflags=-dumpdep", "-o", os.DevNull, ".")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go build -ldflags=-dumpdep: %v\n%.2000s", err, out)
	}
	seen := map[string]bool{}
	var callers []string
	for _, line := range strings.Split(string(out), "\n") {
		from, to, ok := strings.Cut(line, " -> ")
		if !ok {
			continue
		}
		// An edge is printed when its target is first reached, so a marked
		// function whose callees were all reached before shows up only on
		// the right.
		for _, side := range []string{from, to} {
			if name, marked := strings.CutSuffix(side, " <ReflectMethod>"); marked && !seen[name] {
				seen[name] = true
				callers = append(callers, name)
			}
		}
	}
	if len(callers) > 0 {
		t.Errorf("these functions call methods by name through reflect, so the linker keeps every exported method "+
			"(go build -ldflags=-dumpdep ./cmd/outbox-relay | grep ReflectMethod shows what reaches them): %s", strings.Join(callers, ", "))
	}
}
