package admin

import (
	"strings"
	"testing"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

func TestPlanSkip(t *testing.T) {
	// Three transactions: a (one event), b (two events), c (one event).
	pending := []PendingEvent{
		{ID: "a1", LSN: 10, CommitLSN: 20, CommitEnd: 25},
		{ID: "b1", LSN: 30, CommitLSN: 50, CommitEnd: 55},
		{ID: "b2", LSN: 40, CommitLSN: 50, CommitEnd: 55},
		{ID: "c1", LSN: 60, CommitLSN: 70, CommitEnd: 75},
	}
	cases := []struct {
		id        string
		whole     bool
		wantIDs   string
		wantTo    outboxrelay.LSN
		wantError string
	}{
		{id: "a1", wantIDs: "a1", wantTo: 25},
		{id: "b1", wantError: "committed before"},
		{id: "zz", wantError: "not pending"},
	}
	for _, c := range cases {
		skipped, to, err := PlanSkip(pending, c.id, c.whole)
		if c.wantError != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantError) {
				t.Errorf("skip %s: error %v, want %q", c.id, err, c.wantError)
			}
			continue
		}
		var ids []string
		for _, e := range skipped {
			ids = append(ids, e.ID)
		}
		if err != nil || strings.Join(ids, ",") != c.wantIDs || to != c.wantTo {
			t.Errorf("skip %s: %v to %s (%v), want %s to %s", c.id, ids, to, err, c.wantIDs, c.wantTo)
		}
	}
	// With a delivered, b's siblings need --whole-transaction.
	rest := pending[1:]
	if _, _, err := PlanSkip(rest, "b2", false); err == nil || !strings.Contains(err.Error(), "--whole-transaction") || !strings.Contains(err.Error(), "b1") {
		t.Errorf("skip b2 alone: %v, want a refusal naming b1 and --whole-transaction", err)
	}
	skipped, to, err := PlanSkip(rest, "b2", true)
	if err != nil || len(skipped) != 2 || to != 55 {
		t.Errorf("skip b2 --whole-transaction: %v to %s (%v), want b1, b2 to 0/37", skipped, to, err)
	}
}
