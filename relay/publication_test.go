package relay_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/replication"
)

// Regression: the relay checked publication membership only at start.
// After the outbox left the publication, pgoutput stopped sending its rows
// (it decides at decode time), the slot confirmed past them on keepalives,
// /readyz kept answering "streaming" and nothing was logged: every later
// event was lost. Now the relay re-reads the publication before each
// confirmation and halts, naming the fix and the window to re-publish.
func TestOutboxLeavingThePublicationHaltsTheRelay(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change string
		want   string
	}{
		{"dropped from the publication", `ALTER PUBLICATION outbox_relay DROP TABLE outbox`, "is no longer in publication"},
		{"dropped from the publication and added back", `ALTER PUBLICATION outbox_relay DROP TABLE outbox;
			INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload) VALUES ('order', 'lost', 'Created', '{}');
			ALTER PUBLICATION outbox_relay ADD TABLE outbox`, "removed from publication"},
		{"dropped and recreated", `ALTER TABLE outbox RENAME TO outbox_old;
			CREATE TABLE outbox (LIKE outbox_old INCLUDING ALL)`, "no longer in publication"},
		{"dropped, recreated and published again", `ALTER TABLE outbox RENAME TO outbox_old;
			CREATE TABLE outbox (LIKE outbox_old INCLUDING ALL);
			ALTER PUBLICATION outbox_relay ADD TABLE outbox`, "dropped and created again"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			env := relaytest.NewEnv(t, pg, kafkatest.Options{})
			cfg := env.Config()
			run := relaytest.Start(t, cfg)
			run.WaitReady(ctx, t)

			_, lsn := env.Insert(ctx, []relaytest.Event{{AggregateType: "order", AggregateID: "a", EventType: "Created", Seq: 1}})
			env.WaitConfirmed(ctx, cfg.Replication.Slot, lsn)

			if _, err := env.Pool.Exec(ctx, tc.change); err != nil {
				t.Fatal(err)
			}
			lost := env.CurrentLSN(ctx)
			// Rows the relay never sees, and WAL that keepalives would
			// otherwise let the slot confirm.
			for i := 0; i < 20; i++ {
				if _, err := env.Pool.Exec(ctx, `INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
					VALUES ('order', 'after', 'Created', '{}')`); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-run.Done():
			case <-ctx.Done():
				st := run.Relay.State()
				t.Fatalf("relay still %s (%s) after the outbox left the publication", st.Phase, st.Detail)
			}
			err := run.Err()
			var ce *replication.ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "ALTER PUBLICATION") ||
				!strings.Contains(err.Error(), "re-publish") {
				t.Fatalf("Run = %v; want a ConfigError saying %q, with the ALTER PUBLICATION and the window to re-publish", err, tc.want)
			}
			if st := run.Relay.State(); st.Ready() || !strings.Contains(st.Detail, tc.want) {
				t.Errorf("state = %s %q, want not ready and saying why", st.Phase, st.Detail)
			}
			if got := env.Confirmed(ctx, cfg.Replication.Slot); got > lost {
				t.Errorf("slot confirmed %s, past %s where the outbox left the publication", got, lost)
			}
		})
	}
}
