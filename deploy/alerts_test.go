package deploy

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/outbox-relay/outbox-relay/internal/tooltest"
)

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatalf("prometheus/alerts.yml: %v", err)
	}
	return rf
}

// TestAlertRulesPromtool runs promtool's own checks and the unit tests in
// prometheus/alerts_test.yml: each alert fires on a series that should
// fire it and stays quiet on a near miss.
func TestAlertRulesPromtool(t *testing.T) {
	promtool := tooltest.Need(t, "apt-get install -y prometheus (Debian's package has promtool)", "promtool")
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestEveryAlertIsTestedAndHasARunbook: an alert nobody tested, or whose
// runbook link leads nowhere, is one an operator cannot trust at 3 a.m.
func TestEveryAlertIsTestedAndHasARunbook(t *testing.T) {
	rf := readRules(t)
	tests, err := os.ReadFile("prometheus/alerts_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	anchors := markdownAnchors(t, "../docs/operations.md")
	const prefix = "https://github.com/outbox-relay/outbox-relay/blob/main/docs/operations.md#"
	n := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			n++
			if !regexp.MustCompile(`(?m)alertname: ` + regexp.QuoteMeta(r.Alert) + `$`).Match(tests) {
				t.Errorf("%s has no case in prometheus/alerts_test.yml", r.Alert)
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			url := r.Annotations["runbook_url"]
			anchor, ok := strings.CutPrefix(url, prefix)
			if !ok || !anchors[anchor] {
				t.Errorf("%s: runbook_url %q is not a section of docs/operations.md (%s<anchor>)", r.Alert, url, prefix)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s has no summary", r.Alert)
			}
		}
	}
	if n == 0 {
		t.Fatal("prometheus/alerts.yml has no rules")
	}
}

// markdownAnchors returns the anchors GitHub gives the headings of a
// markdown file: lower case, punctuation dropped, spaces as dashes.
func markdownAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	out := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		out[strings.ReplaceAll(drop.ReplaceAllString(h, ""), " ", "-")] = true
	}
	return out
}
