package main

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/outbox-relay/outbox-relay/admin"
	"github.com/outbox-relay/outbox-relay/internal/wire"
)

// recorder is a Registerer that keeps what the relay's constructors
// register, so the test reads every metric family with its labels, even
// the vectors no event has touched yet (a Gather would skip those).
type recorder struct{ cs []prometheus.Collector }

func (r *recorder) Register(c prometheus.Collector) error   { r.cs = append(r.cs, c); return nil }
func (r *recorder) MustRegister(cs ...prometheus.Collector) { r.cs = append(r.cs, cs...) }
func (r *recorder) Unregister(prometheus.Collector) bool    { return false }

// registeredMetrics builds the relay the way run does and returns each
// series name it can export with its label names.
func registeredMetrics(t *testing.T) map[string]map[string]bool {
	t.Helper()
	o := newOptions()
	o.pg.ConnString = "postgres://relay@127.0.0.1:1/app"
	o.kafka.Brokers = []string{"127.0.0.1:1"}
	rec := &recorder{}
	if _, err := wire.Relay(wire.Config{Replication: o.pg, Sink: o.kafka, Relay: o.relay}, zerolog.Nop(), rec); err != nil {
		t.Fatal(err)
	}
	admin.NewSlotMonitor(o.pg, time.Second, zerolog.Nop(), rec)
	registerBuildInfo(rec, readBuildInfo())
	descs := make(chan *prometheus.Desc, 1000)
	for _, c := range rec.cs {
		c.Describe(descs)
	}
	close(descs)
	re := regexp.MustCompile(`fqName: "([^"]+)".*constLabels: \{(.*)\}, variableLabels: \{([^}]*)\}\}$`)
	out := map[string]map[string]bool{}
	for d := range descs {
		m := re.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read %s", d)
		}
		labels := map[string]bool{}
		for _, l := range strings.Split(m[3], ",") {
			labels[strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")")] = true
		}
		for _, kv := range regexp.MustCompile(`(\w+)=`).FindAllStringSubmatch(m[2], -1) {
			labels[kv[1]] = true
		}
		out[m[1]] = labels
		// A histogram's series; harmless extra names for the others.
		out[m[1]+"_bucket"] = map[string]bool{"le": true}
		for l := range labels {
			out[m[1]+"_bucket"][l] = true
		}
		out[m[1]+"_sum"], out[m[1]+"_count"] = labels, labels
	}
	if len(out) < 4*25 {
		t.Fatalf("only %d series names registered; the recorder missed the relay's metrics?", len(out)/4)
	}
	return out
}

// targetLabels are added by Prometheus and the Operator, not by the relay.
var targetLabels = map[string]bool{"job": true, "instance": true, "pod": true, "namespace": true, "service": true, "container": true, "endpoint": true}

// checkExprs reports every outbox_relay_ series or label in exprs that the
// relay does not export.
func checkExprs(t *testing.T, where string, exprs []string, known map[string]map[string]bool) int {
	t.Helper()
	sel := regexp.MustCompile(`\b(outbox_relay_[a-z0-9_]+)(\{([^}]*)\})?`)
	matcher := regexp.MustCompile(`(\w+)\s*(=~|!~|!=|=)`)
	n := 0
	for _, e := range exprs {
		for _, m := range sel.FindAllStringSubmatch(e, -1) {
			n++
			labels, ok := known[m[1]]
			if !ok {
				t.Errorf("%s: %s is not a metric the relay exports (in %q)", where, m[1], e)
				continue
			}
			for _, lm := range matcher.FindAllStringSubmatch(m[3], -1) {
				if !labels[lm[1]] && !targetLabels[lm[1]] {
					t.Errorf("%s: %s has no label %q (in %q)", where, m[1], lm[1], e)
				}
			}
		}
	}
	return n
}

// TestGrafanaDashboardUsesRealMetrics keeps docs/grafana-dashboard.json true
// to the code: every series and label its queries name is one the relay
// exports (a renamed metric would leave a panel silently empty).
func TestGrafanaDashboardUsesRealMetrics(t *testing.T) {
	b, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if s, ok := c.(string); ok && (k == "expr" || k == "query") {
					exprs = append(exprs, s)
				}
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(dash)
	if n := checkExprs(t, "docs/grafana-dashboard.json", exprs, registeredMetrics(t)); n < 10 {
		t.Fatalf("found only %d outbox_relay_ series in %d queries; the dashboard's format changed?", n, len(exprs))
	}
}

// TestAlertRulesUseRealMetrics does the same for deploy/prometheus/alerts.yml:
// promtool's tests feed the rules the series they name, so only this test
// notices a name the relay does not export.
func TestAlertRulesUseRealMetrics(t *testing.T) {
	b, err := os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	exprs := regexp.MustCompile(`(?ms)^\s+expr: (\|\n(?:\s{10}.*\n)+|.*$)`).FindAllString(string(b), -1)
	if n := checkExprs(t, "deploy/prometheus/alerts.yml", exprs, registeredMetrics(t)); n < 15 {
		t.Fatalf("found only %d outbox_relay_ series in %d rules", n, len(exprs))
	}
}
