package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// chartOwned are the run flags the Helm chart does not take in its config
// map: secrets come from Kubernetes Secrets, the listen address from
// service.port, and the one-time consent from the command line.
var chartOwned = map[string]string{
	"pg-url":              "secrets.pgURL",
	"kafka-sasl-password": "secrets.kafkaSASLPassword",
	"kafka-tls-ca":        "secrets.kafkaTLS.caKey",
	"kafka-tls-cert":      "secrets.kafkaTLS.certKey",
	"kafka-tls-key":       "secrets.kafkaTLS.keyKey",
	"encryption-keys":     "secrets.encryptionKeys",
	"metrics-addr":        "service.port",
	"accept-gap":          "(command line only)",
	"config":              "(the chart's ConfigMap)",
}

// TestHelmValuesCarryEveryRunFlag keeps the chart's values.yaml true to
// `outbox-relay run`: every option is settable (under config:, with the
// relay's own default, or by the chart's secrets and service), and config:
// names no flag the relay does not have.
func TestHelmValuesCarryEveryRunFlag(t *testing.T) {
	b, err := os.ReadFile("../../deploy/helm/outbox-relay/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Config map[string]yaml.Node `yaml:"config"`
	}
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	_, fs := runFlags()
	seen := map[string]bool{}
	var missing []string
	fs.VisitAll(func(f *flag.Flag) {
		seen[f.Name] = true
		node, inConfig := values.Config[f.Name]
		_, owned := chartOwned[f.Name]
		switch {
		case inConfig && owned:
			t.Errorf("values.yaml config.%s: the chart sets it through %s; a value here would be refused", f.Name, chartOwned[f.Name])
		case !inConfig && !owned:
			missing = append(missing, f.Name)
		case inConfig && node.Value != f.DefValue:
			t.Errorf("values.yaml config.%s is %q; the relay's default is %q", f.Name, node.Value, f.DefValue)
		}
	})
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("values.yaml config: has no key for run's %s", "--"+strings.Join(missing, ", --"))
	}
	for name := range values.Config {
		if !seen[name] {
			t.Errorf("values.yaml config.%s is not a flag of outbox-relay run (the relay would refuse the key)", name)
		}
	}
	// The relay must accept the values as its --config file (the chart
	// renders config: plus metrics-addr into it).
	cfg := map[string]yaml.Node{"metrics-addr": {Kind: yaml.ScalarNode, Value: "0.0.0.0:9187"}}
	for k, v := range values.Config {
		if k == "preset" && v.Value == "" {
			continue // the chart's relayConfig leaves an empty preset out
		}
		cfg[k] = v
	}
	file := filepath.Join(t.TempDir(), "relay.yaml")
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, out, 0o600); err != nil {
		t.Fatal(err)
	}
	o, rfs := runFlags()
	if err := parse(rfs, o, []string{"--config", file}, noEnv, io.Discard); err != nil {
		t.Errorf("the relay refuses values.yaml's config as its --config file: %v\n%s", err, out)
	}
	if len(seen) < 30 {
		t.Fatalf("run has only %d flags; runFlags changed?", len(seen))
	}
}
