// Package tooltest finds the external programs some tests run (promtool,
// helm, a headless Chromium). CI installs them (.ci/run), so there a missing
// tool fails the test; on a developer's machine the test skips and says
// what to install, rather than hiding that it did not run.
package tooltest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true, as .ci/run is run).
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

// Need returns the path of the first of names found on PATH. Missing, it
// fails t in CI and skips t elsewhere; install says how to get it.
func Need(t testing.TB, install string, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	msg := "NOT TESTED: " + strings.Join(names, " or ") + " not found on PATH; install it with: " + install
	if InCI() {
		t.Fatal(msg + " (.ci/run installs it; CI=true makes a missing tool a failure)")
	}
	t.Skip(msg)
	return ""
}
