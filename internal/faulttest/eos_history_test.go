package faulttest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

// A position in Kafka ahead of the database's WAL, written under the same
// system identifier and slot (the database was restored from a backup, or
// a promoted replica's WAL is behind the old primary's; here the position
// is written directly), would drop the database's new events as already
// delivered (the review found the slot confirmed past such an event that
// never reached Kafka): the relay refuses to start, naming the fix.
func TestExactlyOncePositionAheadOfWALRefusesStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 1})
	cfg := env.Config()
	cfg.Sink.Transactions.Enabled = true
	var sysID string
	if err := env.Pool.QueryRow(ctx, "SELECT system_identifier::text FROM pg_control_system()").Scan(&sysID); err != nil {
		t.Fatal(err)
	}
	cur := env.CurrentLSN(ctx)
	// The old primary's relay committed up to here (16 MB of WAL the
	// promoted replica never received).
	ahead := cur + 16<<20
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.Kafka.Addrs()...), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	val := fmt.Sprintf(`{"slot":%q,"commit_lsn":%q,"events":1,"committed_at":"2026-01-01T00:00:00Z"}`, cfg.Replication.Slot, ahead.String())
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "outbox-relay.offsets", Key: []byte(sysID + "/" + cfg.Replication.Slot), Value: []byte(val)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	run := relaytest.Start(t, cfg)
	select {
	case <-run.Done():
	case <-ctx.Done():
		t.Fatal("the relay started on a position ahead of the database's WAL")
	}
	err = run.Err()
	if !outboxrelay.IsConfigError(err) || !strings.Contains(err.Error(), "ahead of this database's WAL") {
		t.Fatalf("Run returned %v, want a ConfigError saying the position is ahead of the WAL", err)
	}
	t.Logf("refused: %v", err)
}
