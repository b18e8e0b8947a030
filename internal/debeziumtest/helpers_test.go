package debeziumtest_test

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

// written is one row a test inserted: its id and its payload as Postgres
// renders it (what the record's value must be, byte for byte).
type written struct {
	id, aggregate string
	payload       *string
}

// insertTx runs each statement (an INSERT ... RETURNING id::text,
// aggregate, payload::text) in one transaction and returns the rows.
func insertTx(ctx context.Context, t *testing.T, env *relaytest.Env, stmts ...string) []written {
	t.Helper()
	var out []written
	err := pgx.BeginFunc(ctx, env.Pool, func(tx pgx.Tx) error {
		for _, q := range stmts {
			var w written
			if err := tx.QueryRow(ctx, q).Scan(&w.id, &w.aggregate, &w.payload); err != nil {
				return err
			}
			out = append(out, w)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("insert: %v", err)
	}
	return out
}

// byKey groups records by key in partition-offset order, checking that one
// key's records share a partition (per-aggregate order needs that).
func byKey(t *testing.T, recs []kafkatest.Record) map[string][]kafkatest.Record {
	t.Helper()
	out := map[string][]kafkatest.Record{}
	for _, r := range recs {
		k := string(r.Key)
		if prev := out[k]; len(prev) > 0 && (prev[0].Topic != r.Topic || prev[0].Partition != r.Partition) {
			t.Errorf("key %q on %s[%d] and %s[%d]: one aggregate must stay on one partition", k, prev[0].Topic, prev[0].Partition, r.Topic, r.Partition)
		}
		out[k] = append(out[k], r)
	}
	for _, rs := range out {
		slices.SortFunc(rs, func(a, b kafkatest.Record) int { return int(a.Offset - b.Offset) })
	}
	return out
}

func ids(recs []kafkatest.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Headers["id"]
	}
	return out
}
