package replication

import (
	"strings"
	"testing"
)

func TestParseTable(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    TableName
		wantErr string
	}{
		{in: "outbox", want: TableName{"public", "outbox"}},
		{in: "app.outbox", want: TableName{"app", "outbox"}},
		// Regression: names are taken as written, never case-folded.
		{in: "Sales.Outbox Events", want: TableName{"Sales", "Outbox Events"}},
		{in: `"Sales"."Outbox Events"`, want: TableName{"Sales", "Outbox Events"}},
		{in: `"a.b".c`, want: TableName{"a.b", "c"}},
		{in: `"say ""hi""".t`, want: TableName{`say "hi"`, "t"}},
		{in: `Sales."Outbox.Events"`, want: TableName{"Sales", "Outbox.Events"}},
		{in: "a.b.c", wantErr: "3 dot-separated parts"},
		{in: ".outbox", wantErr: "empty name part"},
		{in: "app.", wantErr: "empty name part"},
		{in: `"app.outbox`, wantErr: "unclosed double quote"},
		{in: `"app"x.outbox`, wantErr: "after a closing double quote"},
		{in: `ap"p.outbox`, wantErr: "double quote inside an unquoted name"},
		{in: `"".outbox`, wantErr: "empty quoted name"},
	} {
		got, err := ParseTable(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseTable(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseTable(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	if got := (TableName{"Sales", "Outbox Events"}).SQL(); got != `"Sales"."Outbox Events"` {
		t.Errorf("SQL() = %s", got)
	}
}

// Regression: the publication name was pasted into START_REPLICATION's
// options unquoted, so the server case-folded "OutboxPub" to outboxpub (no
// such publication) and a quote broke the command.
func TestPublicationNamesArg(t *testing.T) {
	for in, want := range map[string]string{
		"outbox_relay": `publication_names '"outbox_relay"'`,
		"OutboxPub":    `publication_names '"OutboxPub"'`,
		"it's":         `publication_names '"it''s"'`,
		`a"b,c`:        `publication_names '"a""b,c"'`,
	} {
		if got := publicationNamesArg(in); got != want {
			t.Errorf("publicationNamesArg(%q) = %s, want %s", in, got, want)
		}
	}
}

// A publication without publish_via_partition_root names a partitioned
// outbox's rows by their partitions; the matcher the stream installs says
// which relations are the outbox.
func TestDecodeMatchesPartitionsThroughTheMatcher(t *testing.T) {
	d, skipped := newTestDecoder(t, nil)
	d.MatchOutbox(func(relid uint32, _, name string, _ []string) (bool, error) {
		return relid == 7 || name == "outbox", nil
	})
	msgs := decodeAll(t, d,
		relationMsg(7, "public", "outbox_2026", outboxColumns),
		relationMsg(8, "public", "orders", []column{{"id", 20}}),
		beginMsg(1),
		insertMsg(7, outboxRow("e1", "order", []byte(`{}`))),
		insertMsg(8, [][]byte{[]byte("1")}),
		commitMsg(1, 2),
	)
	if len(msgs) != 2 || msgs[0].Kind != KindEvent || msgs[0].Event.ID != "e1" {
		t.Fatalf("got %+v, want the partition's row then the commit", msgs)
	}
	if skipped[SkippedOtherTable] != 1 {
		t.Errorf("skipped other tables = %d, want 1", skipped[SkippedOtherTable])
	}
}
