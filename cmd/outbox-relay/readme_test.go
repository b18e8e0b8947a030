package main

import (
	"bytes"
	"context"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
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
	flagLine := regexp.MustCompile(`(?m)^  --(\S+)\n\s+.*\(default (.*?); (?:env \S+|command line only)\)`)
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

// TestMetricsDocumented keeps docs/metrics.md true: every metric name the
// code registers must be described there.
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`Name:\s+"(outbox_relay_[a-z0-9_]+)"`)
	found := 0
	err = filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range name.FindAllStringSubmatch(string(src), -1) {
			found++
			if !strings.Contains(string(doc), m[1]) {
				t.Errorf("%s registers %s, which docs/metrics.md does not describe", path, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found < 15 {
		t.Fatalf("found only %d metric names in the source; the pattern is stale", found)
	}
}

// TestComposeUsesRealFlags: docker-compose.yml cannot run here (no Docker),
// so at least every OUTBOX_RELAY_ variable it sets must be a flag of run.
func TestComposeUsesRealFlags(t *testing.T) {
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	_, fs := runFlags()
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { known[envName(f.Name)] = true })
	seen := 0
	for name, svc := range compose.Services {
		for k := range svc.Environment {
			if strings.HasPrefix(k, "OUTBOX_RELAY_") {
				seen++
				if !known[k] {
					t.Errorf("service %s sets %s, which no run flag reads", name, k)
				}
			}
		}
	}
	if seen == 0 {
		t.Fatal("docker-compose.yml configures no relay through OUTBOX_RELAY_ variables")
	}
}
