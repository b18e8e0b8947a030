package admin

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/replication"
)

func TestJudgePrune(t *testing.T) {
	cfg := PruneConfig{Table: replication.TableName{Schema: "public", Table: "outbox"}, Column: "created_at", OlderThan: time.Hour, Batch: 10}
	ok := pruneFacts{tableFound: true, columnFound: true, typeOK: true, indexed: true}
	for _, tc := range []struct {
		name  string
		facts func(*pruneFacts)
		allow bool
		want  string
	}{
		{"indexed", func(*pruneFacts) {}, false, ""},
		{"no table", func(f *pruneFacts) { f.tableFound = false }, false, "does not exist"},
		{"no column", func(f *pruneFacts) { f.columnFound = false }, false, `has no column "created_at": set --created-at-column`},
		{"text column", func(f *pruneFacts) { f.typeOK, f.typeName = false, "text" }, false, "is text"},
		{"no index", func(f *pruneFacts) { f.indexed = false }, false, `CREATE INDEX CONCURRENTLY "outbox_created_at_idx" ON "public"."outbox" ("created_at");`},
		{"no index, partitioned", func(f *pruneFacts) { f.indexed, f.partitioned = false, true }, false, `CREATE INDEX "outbox_created_at_idx" ON "public"."outbox" ("created_at");`},
		{"no index, allowed", func(f *pruneFacts) { f.indexed = false }, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := ok
			tc.facts(&f)
			c := cfg
			c.AllowSeqscan = tc.allow
			err := judgePrune(c, f)
			if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("judgePrune = %v, want %q", err, tc.want)
			}
			var ni *NoIndexError
			if err != nil && strings.Contains(tc.name, "no index") && (!errors.As(err, &ni) || !strings.Contains(err.Error(), "--allow-seqscan")) {
				t.Fatalf("judgePrune = %v, want a NoIndexError naming --allow-seqscan", err)
			}
		})
	}
}

func TestPruneConfigValidate(t *testing.T) {
	err := PruneConfig{Batch: 0, Pause: -time.Second}.Validate()
	for _, want := range []string{"created-at column is empty", "older-than 0s", "batch 0", "pause -1s"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want it to say %q", err, want)
		}
	}
}
