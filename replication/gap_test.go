package replication

import (
	"strings"
	"testing"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

func TestDetectGap(t *testing.T) {
	rec := Checkpoint{Slot: "s", LSN: 1000}
	slot := func(confirmed outboxrelay.LSN, status string) SlotInfo {
		return SlotInfo{Exists: true, Plugin: "pgoutput", ConfirmedFlush: confirmed, WALStatus: status}
	}
	cases := []struct {
		name      string
		slot      SlotInfo
		hasRecord bool
		wantKind  string
		from, to  outboxrelay.LSN
	}{
		{"at the record", slot(1000, "reserved"), true, "", 0, 0},
		{"behind the record (Postgres crash: resend only)", slot(900, "reserved"), true, "", 0, 0},
		{"no record yet: adopt", slot(5000, "reserved"), false, "", 0, 0},
		{"no record and no slot: first start", SlotInfo{}, false, "", 0, 0},
		{"past the record: recreated or advanced behind the relay's back", slot(1001, "reserved"), true, GapSlotMoved, 1000, 1001},
		{"missing while recorded", SlotInfo{}, true, GapSlotMissing, 1000, 9000},
		{"lost", slot(800, "lost"), true, GapSlotLost, 800, 9000},
		{"lost without a record", slot(800, "lost"), false, GapSlotLost, 800, 9000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := DetectGap("s", c.slot, rec, c.hasRecord, 9000)
			switch {
			case c.wantKind == "" && g != nil:
				t.Fatalf("gap %+v, want none", g)
			case c.wantKind == "":
				return
			case g == nil:
				t.Fatalf("no gap, want %s", c.wantKind)
			case g.Kind != c.wantKind || g.From != c.from || g.To != c.to:
				t.Fatalf("gap %s %s..%s, want %s %s..%s", g.Kind, g.From, g.To, c.wantKind, c.from, c.to)
			}
			err := &GapError{Gap: *g}
			if !IsConfigError(err) || !strings.Contains(err.Error(), "--accept-gap") || !strings.Contains(err.Error(), g.From.String()) {
				t.Fatalf("gap error %q is not a fatal ConfigError naming the recovery and the LSNs", err)
			}
		})
	}
}

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
