package checkpoint

import (
	"strings"
	"testing"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

func TestDetectGap(t *testing.T) {
	rec := Record{Slot: "s", LSN: 1000}
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
			if !outboxrelay.IsConfigError(err) || !strings.Contains(err.Error(), "--accept-gap") || !strings.Contains(err.Error(), g.From.String()) {
				t.Fatalf("gap error %q is not a fatal ConfigError naming the recovery and the LSNs", err)
			}
		})
	}
}
