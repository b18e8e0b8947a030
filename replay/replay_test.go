package replay

import (
	"context"
	"strings"
	"testing"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/route"
)

func TestQuery(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	until := since.Add(time.Hour)
	tn := replication.TableName{Schema: "Sales", Table: `Out"box`}
	cols := []route.Column{{Name: "id"}, {Name: "Payload"}}
	for _, tc := range []struct {
		name  string
		f     Filter
		where string
		args  int
	}{
		{"since only", Filter{CreatedAt: "created_at", Since: since}, `WHERE "created_at" >= $1::timestamptz ORDER BY "created_at", ctid`, 1},
		{"every filter", Filter{CreatedAt: "made at", Since: since, Until: until, AggregateType: "order", AggregateID: "42", IDs: []string{"a", "b"}},
			`WHERE "made at" >= $1::timestamptz AND "made at" < $2::timestamptz AND "aggregate_type"::text = $3 AND "aggregate_id"::text = $4 AND "id"::text = ANY($5) ORDER BY "made at", ctid`, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sql, args := query(tn, cols, route.DefaultColumns(), tc.f)
			wantHead := `SELECT "id", "Payload", (extract(epoch FROM ` + replication.QuoteIdent(tc.f.CreatedAt) + `::timestamptz) * 1000000)::bigint FROM "Sales"."Out""box" `
			if !strings.HasPrefix(sql, wantHead) || !strings.HasSuffix(sql, tc.where) || len(args) != tc.args {
				t.Fatalf("query\n%s\n(%d args), want\n%s...%s (%d args)", sql, len(args), wantHead, tc.where, tc.args)
			}
		})
	}
}

func TestFilterValidate(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		f    Filter
		want string
	}{
		{Filter{CreatedAt: "created_at", Since: since}, ""},
		{Filter{CreatedAt: "created_at"}, "since is required"},
		{Filter{Since: since}, "created-at column is empty"},
		{Filter{CreatedAt: "created_at", Since: since, Until: since}, "is not after since"},
	} {
		err := tc.f.Validate()
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.f, err, tc.want)
		}
	}
}

// Replay reads one table: with more outboxes configured it refuses rather
// than publish only the first one's window (a review found the others'
// events silently left out).
func TestRowsRefusesSeveralOutboxes(t *testing.T) {
	cfg := replication.DefaultConfig()
	cfg.Outboxes = []replication.Outbox{{}}
	f := Filter{CreatedAt: "created_at", Since: time.Now().Add(-time.Hour)}
	err := Rows(context.Background(), nil, cfg, f, func(outboxrelay.Event) error { return nil })
	if !outboxrelay.IsConfigError(err) {
		t.Fatalf("Rows with an outboxes list: %v, want a ConfigError", err)
	}
}
