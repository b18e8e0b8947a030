package deploy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// helmModule is the helm the tests run, pinned, from the Go module proxy;
// .ci/run compiles the same one before make test (a test checks they
// agree), so its build is not inside make test's time. OUTBOX_RELAY_HELM
// names another helm binary instead.
const helmModule = "helm.sh/helm/v3/cmd/helm@v3.22.0"

const chart = "helm/outbox-relay"

// helmCmd is how the tests run helm: OUTBOX_RELAY_HELM, or the binary
// `go run` built and cached for helmModule (found once with go run -exec
// echo: one go run, not one per call), or else go run itself.
var helmCmd []string

func TestMain(m *testing.M) {
	helmCmd = findHelm()
	os.Exit(m.Run())
}

func findHelm() []string {
	if bin := os.Getenv("OUTBOX_RELAY_HELM"); bin != "" {
		return []string{bin}
	}
	goRun := []string{"go", "run", helmModule}
	out, err := exec.Command("go", "run", "-exec", "echo", helmModule).Output()
	if err != nil {
		return goRun // the helm tests then fail with go run's own error
	}
	if bin := strings.TrimSpace(string(out)); filepath.IsAbs(bin) {
		if _, err := os.Stat(bin); err == nil {
			return []string{bin}
		}
	}
	return goRun
}

// helm runs helm with args; the error carries its output.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helmCmd[0], append(helmCmd[1:len(helmCmd):len(helmCmd)], args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), errors.New(err.Error() + ": " + stderr.String() + stdout.String())
	}
	return stdout.String(), nil
}

// manifest is one rendered Kubernetes object, as generic YAML.
type manifest = map[string]any

// render runs helm template with the value files and returns the objects
// by "Kind/name".
func render(t *testing.T, valueFiles ...string) map[string]manifest {
	t.Helper()
	args := []string{"template", "rel", chart, "--namespace", "apps"}
	for _, f := range valueFiles {
		args = append(args, "-f", f)
	}
	out, err := helm(t, args...)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	objs := map[string]manifest{}
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var m manifest
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("helm template printed YAML that does not parse: %v\n%s", err, out)
		}
		if m == nil {
			continue
		}
		objs[get[string](t, m, "kind")+"/"+get[string](t, m, "metadata", "name")] = m
	}
	return objs
}

// get walks a path of map keys and list indexes in a manifest.
func get[T any](t *testing.T, v any, path ...any) T {
	t.Helper()
	cur := v
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				t.Fatalf("at %v: %T is not a map", path, cur)
			}
			cur = m[k]
		case int:
			l, ok := cur.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("at %v: %T has no item %d", path, cur, k)
			}
			cur = l[k]
		}
	}
	out, ok := cur.(T)
	if !ok {
		var zero T
		t.Fatalf("at %v: got %T (%v), want %T", path, cur, cur, zero)
	}
	return out
}

func TestHelmLint(t *testing.T) {
	out, err := helm(t, "lint", "--strict", chart, "-f", chart+"/ci/lint-values.yaml")
	if err != nil {
		t.Fatalf("helm lint: %v", err)
	}
	if !strings.Contains(out, "0 chart(s) failed") {
		t.Errorf("helm lint: %s", out)
	}
	// With every option the chart takes set.
	if out, err := helm(t, "lint", "--strict", chart, "-f", "testdata/full-values.yaml"); err != nil {
		t.Fatalf("helm lint with testdata/full-values.yaml: %v\n%s", err, out)
	}
}

// TestHelmDefaults: the chart's defaults make the pair the issue asks for.
func TestHelmDefaults(t *testing.T) {
	objs := render(t, chart+"/ci/lint-values.yaml")
	dep := objs["Deployment/rel-outbox-relay"]
	if dep == nil {
		t.Fatalf("no Deployment/rel-outbox-relay among %v", keys(objs))
	}
	if n := get[int](t, dep, "spec", "replicas"); n != 2 {
		t.Errorf("replicas = %d, want 2 (one streams, one hot standby)", n)
	}
	if s := get[string](t, dep, "spec", "strategy", "type"); s != "Recreate" {
		t.Errorf("strategy %s: only the streaming pod is Ready, so a rolling update would stall", s)
	}
	pod := get[map[string]any](t, dep, "spec", "template", "spec")
	c := get[map[string]any](t, pod, "containers", 0)
	if p := get[string](t, c, "livenessProbe", "httpGet", "path"); p != "/healthz" {
		t.Errorf("liveness probe path %s, want /healthz", p)
	}
	if p := get[string](t, c, "readinessProbe", "httpGet", "path"); p != "/readyz" {
		t.Errorf("readiness probe path %s, want /readyz", p)
	}
	if g := get[int](t, pod, "terminationGracePeriodSeconds"); g <= 30 {
		t.Errorf("terminationGracePeriodSeconds %d is not above the default --shutdown-timeout 30s", g)
	}
	if !get[bool](t, pod, "securityContext", "runAsNonRoot") || !get[bool](t, c, "securityContext", "readOnlyRootFilesystem") ||
		get[bool](t, c, "securityContext", "allowPrivilegeEscalation") {
		t.Errorf("the container is not non-root and read-only: pod %v, container %v", pod["securityContext"], c["securityContext"])
	}
	if get[string](t, c, "resources", "requests", "memory") == "" || get[string](t, c, "resources", "requests", "cpu") == "" {
		t.Errorf("no resource requests: %v", c["resources"])
	}
	checkSecretEnv(t, c, "OUTBOX_RELAY_PG_URL", "outbox-relay-postgres", "pg-url")
	cfg := relayConfig(t, objs["ConfigMap/rel-outbox-relay"])
	if cfg["metrics-addr"] != "0.0.0.0:9187" || cfg["kafka-brokers"] != "kafka-0.kafka:9092,kafka-1.kafka:9092" {
		t.Errorf("relay.yaml: metrics-addr %v, kafka-brokers %v", cfg["metrics-addr"], cfg["kafka-brokers"])
	}
	if cfg["max-in-flight-bytes"] != 16777216 {
		t.Errorf("relay.yaml max-in-flight-bytes = %#v, want the integer 16777216 (the relay refuses 1.6777216e+07)", cfg["max-in-flight-bytes"])
	}
	svc := objs["Service/rel-outbox-relay"]
	if !get[bool](t, svc, "spec", "publishNotReadyAddresses") {
		t.Error("the Service hides the standby from Prometheus: publishNotReadyAddresses is not true")
	}
	if p := get[int](t, svc, "spec", "ports", 0, "port"); p != 9187 {
		t.Errorf("Service port %d, want 9187", p)
	}
	for _, k := range []string{"ServiceMonitor/rel-outbox-relay", "PrometheusRule/rel-outbox-relay"} {
		if objs[k] != nil {
			t.Errorf("%s rendered although it is off by default (it needs the Prometheus Operator's CRDs)", k)
		}
	}
}

// TestHelmValuesReachTheManifests: what a user sets lands where it acts.
func TestHelmValuesReachTheManifests(t *testing.T) {
	objs := render(t, "testdata/full-values.yaml")
	dep := objs["Deployment/rel-outbox-relay"]
	pod := get[map[string]any](t, dep, "spec", "template", "spec")
	c := get[map[string]any](t, pod, "containers", 0)
	if n := get[int](t, dep, "spec", "replicas"); n != 3 {
		t.Errorf("replicas = %d, want 3", n)
	}
	if img := get[string](t, c, "image"); img != "registry.example/outbox-relay:v9.9.9" {
		t.Errorf("image %s", img)
	}
	// shutdown-timeout 2m: the grace period must outlast it.
	if g := get[int](t, pod, "terminationGracePeriodSeconds"); g != 135 {
		t.Errorf("terminationGracePeriodSeconds %d, want 135 (shutdown-timeout 2m + 15 s)", g)
	}
	checkSecretEnv(t, c, "OUTBOX_RELAY_PG_URL", "orders-db", "url")
	checkSecretEnv(t, c, "OUTBOX_RELAY_KAFKA_SASL_PASSWORD", "kafka-creds", "sasl-password")
	checkSecretEnv(t, c, "OUTBOX_RELAY_ENCRYPTION_KEYS", "outbox-keys", "keys")
	cfg := relayConfig(t, objs["ConfigMap/rel-outbox-relay"])
	for k, want := range map[string]any{
		"kafka-brokers": "b1:9093,b2:9093", "kafka-sasl-user": "relay", "kafka-sasl-mechanism": "SCRAM-SHA-512",
		"shutdown-timeout": "2m", "max-in-flight": 500, "max-in-flight-bytes": 33554432,
		"topic": "orders.{aggregate_type}", "create-missing": false, "slot": "orders_relay",
		"metrics-addr": "0.0.0.0:9300", "kafka-tls": true,
		"kafka-tls-ca": "/etc/outbox-relay/kafka-tls/ca", "kafka-tls-cert": "/etc/outbox-relay/kafka-tls/cert",
		"kafka-tls-key": "/etc/outbox-relay/kafka-tls/key",
	} {
		if !reflect.DeepEqual(cfg[k], want) {
			t.Errorf("relay.yaml %s = %#v, want %#v", k, cfg[k], want)
		}
	}
	for _, secret := range []string{"pg-url", "kafka-sasl-password"} {
		if _, ok := cfg[secret]; ok {
			t.Errorf("relay.yaml holds %s: secrets belong in Secrets", secret)
		}
	}
	vols := get[[]any](t, pod, "volumes")
	if len(vols) != 2 || get[string](t, vols[1], "secret", "secretName") != "kafka-tls-files" {
		t.Errorf("volumes %v: want the config map and the kafka-tls-files Secret", vols)
	}
	if p := get[string](t, c, "ports", 0, "name"); p != "metrics" || get[int](t, c, "ports", 0, "containerPort") != 9300 {
		t.Errorf("container port %v", c["ports"])
	}
	sm := objs["ServiceMonitor/rel-outbox-relay"]
	if sm == nil || get[string](t, sm, "spec", "endpoints", 0, "port") != "metrics" ||
		get[string](t, sm, "metadata", "labels", "release") != "kube-prometheus" {
		t.Errorf("ServiceMonitor: %v", sm)
	}
	checkPrometheusRule(t, objs["PrometheusRule/rel-outbox-relay"])
}

// checkPrometheusRule: the chart's rules are deploy/prometheus/alerts.yml,
// the file promtool tests.
func checkPrometheusRule(t *testing.T, pr manifest) {
	t.Helper()
	if pr == nil {
		t.Fatal("no PrometheusRule rendered with prometheusRule.enabled")
	}
	b, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := yaml.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if got := get[[]any](t, pr, "spec", "groups"); !reflect.DeepEqual(got, want["groups"]) {
		t.Errorf("the PrometheusRule's groups differ from prometheus/alerts.yml (copy it to %s/files/alerts.yml)", chart)
	}
}

// TestHelmRefusesUnsafeValues: a secret in the config map, or a grace
// period the drain cannot finish in, fails the render with the fix.
func TestHelmRefusesUnsafeValues(t *testing.T) {
	for _, tc := range []struct {
		name, set, want string
	}{
		{"secret in config", "config.pg-url=postgres://u:pw@db/app", "secrets come from Kubernetes Secrets only"},
		{"password in config", "config.kafka-sasl-password=pw", "set secrets.kafkaSASLPassword.name"},
		{"grace not above shutdown", "terminationGracePeriodSeconds=30", "is not above config.shutdown-timeout (30 s)"},
		{"consent in config", "config.accept-gap=true", "command line only"},
		{"bad duration", "config.shutdown-timeout=soon", `config.shutdown-timeout "soon"`},
		{"no postgres secret", "secrets.pgURL.name=", "secrets.pgURL.name: name the Kubernetes Secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helm(t, "template", "rel", chart, "-f", chart+"/ci/lint-values.yaml", "--set", tc.set)
			if err == nil {
				t.Fatalf("--set %s rendered:\n%s", tc.set, out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("--set %s: %v\nwant the message to say %q", tc.set, err, tc.want)
			}
		})
	}
}

// TestHelmPinsAgree: .ci/run compiles the helm the tests run.
func TestHelmPinsAgree(t *testing.T) {
	ci, err := os.ReadFile("../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ci), "HELM_MODULE="+helmModule+"\n") {
		t.Errorf(".ci/run does not compile %s, the helm deploy/helm_test.go runs", helmModule)
	}
	a, errA := os.ReadFile("prometheus/alerts.yml")
	b, errB := os.ReadFile(chart + "/files/alerts.yml")
	if errA != nil || errB != nil || !bytes.Equal(a, b) {
		t.Errorf("%s/files/alerts.yml differs from prometheus/alerts.yml: cp prometheus/alerts.yml %s/files/", chart, chart)
	}
}

func checkSecretEnv(t *testing.T, container map[string]any, name, secret, key string) {
	t.Helper()
	for _, e := range get[[]any](t, container, "env") {
		if get[string](t, e, "name") != name {
			continue
		}
		if v, ok := e.(map[string]any)["value"]; ok {
			t.Errorf("env %s has a literal value %v; it must come from a Secret", name, v)
			return
		}
		if s, k := get[string](t, e, "valueFrom", "secretKeyRef", "name"), get[string](t, e, "valueFrom", "secretKeyRef", "key"); s != secret || k != key {
			t.Errorf("env %s from Secret %s key %s, want %s key %s", name, s, k, secret, key)
		}
		return
	}
	t.Errorf("no env %s", name)
}

func relayConfig(t *testing.T, cm manifest) map[string]any {
	t.Helper()
	if cm == nil {
		t.Fatal("no ConfigMap rendered")
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(get[string](t, cm, "data", "relay.yaml")), &cfg); err != nil {
		t.Fatalf("relay.yaml: %v", err)
	}
	return cfg
}

func keys(m map[string]manifest) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
