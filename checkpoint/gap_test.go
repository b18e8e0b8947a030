package checkpoint

import (
	"strings"
	"testing"
	"time"

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

// The gap report's replay window starts ReplayMargin before the record's
// last write and ends a minute after the gap was found, in whole seconds.
func TestGapWindow(t *testing.T) {
	rec := time.Date(2026, 3, 4, 10, 20, 30, 500, time.UTC)
	found := time.Date(2026, 3, 4, 11, 30, 0, 250, time.FixedZone("x", 3600))
	g := Gap{Kind: GapSlotMoved, Slot: "s", From: 1, To: 2, RecordedAt: rec, DetectedAt: found}
	since, until, ok := g.Window()
	if !ok || !since.Equal(time.Date(2026, 3, 4, 10, 15, 30, 0, time.UTC)) || !until.Equal(time.Date(2026, 3, 4, 10, 31, 1, 0, time.UTC)) {
		t.Fatalf("window %s .. %s (%v)", since, until, ok)
	}
	want := "replay --since 2026-03-04T10:15:30Z --until 2026-03-04T10:31:01Z"
	if got := strings.Join(g.ReplayArgs(), " "); got != want {
		t.Fatalf("replay args %q, want %q", got, want)
	}
	if msg := (&GapError{Gap: g}).Error(); !strings.Contains(msg, "outbox-relay "+want+" --yes") {
		t.Fatalf("gap report does not print the replay: %s", msg)
	}
	g.DetectedAt = time.Time{}
	if _, _, ok := g.Window(); ok || g.ReplayArgs() != nil {
		t.Fatal("a window without the detection time")
	}
}
