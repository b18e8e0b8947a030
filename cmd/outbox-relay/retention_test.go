package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/eventually"
)

// run --retention prunes from the relay that holds the slot; its hot
// standby skips every run.
func TestRetentionRunsOnTheActiveRelayOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	f := newFixture(t)
	if _, err := f.Pool.Exec(ctx, "CREATE INDEX ON outbox (created_at)"); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--retention", "7d", "--retention-interval", "200ms"}
	active := f.start(ctx, t, flags...)
	active.waitReady(ctx, t)
	standby := f.start(ctx, t, flags...)
	if !eventually.True(ctx, 20*time.Millisecond, func() bool {
		code, body := standby.get(t, "/readyz")
		return code == http.StatusServiceUnavailable && strings.HasPrefix(body, "standby")
	}) {
		t.Fatalf("second relay never became a standby:\n%s", standby.log.String())
	}

	old := f.insertAged(ctx, t, "8 days", 25)
	fresh, _ := f.insert(ctx, "order")
	pruned := eventually.True(ctx, 50*time.Millisecond, func() bool {
		var n int
		return f.Pool.QueryRow(ctx, "SELECT count(*) FROM outbox").Scan(&n) == nil && n == len(fresh)
	})
	if !pruned {
		t.Fatalf("%d rows left, want the %d fresh one(s):\n%s", f.outboxCount(context.Background(), t), len(fresh), active.log.String())
	}
	_, scrape := active.get(t, "/metrics")
	if v, _ := metric(scrape, "outbox_relay_retention_deleted_rows_total"); v != float64(len(old)) {
		t.Errorf("active relay deleted %v rows, want %d", v, len(old))
	}
	if v, _ := metric(scrape, "outbox_relay_retention_last_run_timestamp_seconds"); v == 0 {
		t.Error("active relay's last run time is 0")
	}
	// The standby's schedule ran too, and pruned nothing.
	if !eventually.True(ctx, 50*time.Millisecond, func() bool {
		_, s := standby.get(t, "/metrics")
		v, _ := metric(s, `outbox_relay_retention_runs_total{result="standby"}`)
		return v >= 2
	}) {
		t.Fatal("the standby never counted a skipped run")
	}
	_, scrape = standby.get(t, "/metrics")
	for _, m := range []string{"outbox_relay_retention_deleted_rows_total", `outbox_relay_retention_runs_total{result="pruned"}`} {
		if v, _ := metric(scrape, m); v != 0 {
			t.Errorf("standby %s = %v, want 0", m, v)
		}
	}
	if !strings.Contains(active.log.String(), `"message":"retention run"`) {
		t.Error("the active relay logged no retention run")
	}
	if err := standby.stop(); err != nil {
		t.Fatalf("standby: %v", err)
	}
	f.stopRelay(ctx, t, active)
}
