package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeListsEveryRunFlag keeps the README's option table true: every
// flag `run --help` prints must appear there with the same default.
func TestReadmeListsEveryRunFlag(t *testing.T) {
	var help bytes.Buffer
	if err := run(context.Background(), []string{"run", "--help"}, func(string) string { return "" }, &help, &help); err != nil {
		t.Fatalf("run --help: %v", err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	flagLine := regexp.MustCompile(`(?m)^  --(\S+)\n\s+.*\(default (.*?); env (\S+)\)`)
	matches := flagLine.FindAllStringSubmatch(help.String(), -1)
	if len(matches) < 30 {
		t.Fatalf("parsed only %d flags from run --help; the help format changed?\n%s", len(matches), help.String())
	}
	for _, m := range matches {
		name, def := m[1], m[2]
		row := "| `--" + name + "` | `" + def + "` |"
		if !strings.Contains(string(readme), row) {
			t.Errorf("README.md has no option row starting %q", row)
		}
	}
}
