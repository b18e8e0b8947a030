package e2e_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/faulttest"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
)

func TestKill9DuringLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2})
	p := start(t, env, 200*time.Millisecond)
	p.waitReadyz(ctx, "streaming", streaming)
	load := faulttest.StartLoad(env, 2*time.Millisecond)

	// Each kill leaves an unconfirmed tail: events committed before it
	// and not behind the slot's confirmed position. Only those may come
	// twice.
	type kill struct {
		written   int // events acknowledged to the load before the kill
		confirmed outboxrelay.LSN
	}
	const kills = 3
	var ks []kill
	var lastKill time.Time
	for range kills {
		load.WaitWritten(ctx, t, len(load.Written())+400)
		p.kill()
		lastKill = time.Now()
		ks = append(ks, kill{written: len(load.Written()), confirmed: env.Confirmed(ctx, env.Slot)})
		p = start(t, env, 200*time.Millisecond)
	}
	recovery := faulttest.CatchUp(ctx, t, env, env.Slot, lastKill)
	load.WaitWritten(ctx, t, len(load.Written())+200)
	written := load.Stop()
	rep := faulttest.Verify(ctx, t, env, env.Slot)
	if rep.Written != len(written) {
		t.Errorf("%d rows in the table, %d acknowledged to the load", rep.Written, len(written))
	}

	tail := 0
	for _, k := range ks {
		for _, w := range written[:k.written] {
			if w.After > k.confirmed {
				tail++
			}
		}
	}
	index := make(map[string]int, len(written))
	for i, w := range written {
		index[w.ID] = i
	}
	for id, extra := range rep.Dups {
		i := index[id]
		inTails := 0
		for _, k := range ks {
			if i < k.written && written[i].After > k.confirmed {
				inTails++
			}
		}
		if extra > inTails {
			t.Errorf("event %s (seq %d) delivered %d extra times but was in the unconfirmed tail of %d kills",
				id, written[i].Seq, extra, inTails)
		}
	}
	if rep.Duplicates > tail {
		t.Errorf("%d duplicates, more than the %d events of the unconfirmed tails", rep.Duplicates, tail)
	}
	t.Logf("%d kill -9s; unconfirmed tails held %d events in all; %d duplicates", kills, tail, rep.Duplicates)
	rep.Log(t, "kill -9 of the binary x3 under load", recovery)
}

func TestStandbyTakesOver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	env := relaytest.NewEnv(t, pg, kafkatest.Options{Partitions: 2})
	active := start(t, env, time.Second)
	active.waitReadyz(ctx, "streaming", streaming)
	standby := start(t, env, time.Second)
	standby.waitReadyz(ctx, "standby", func(code int, body string) bool {
		return code == http.StatusServiceUnavailable && strings.HasPrefix(body, "standby")
	})
	if got := active.metric("outbox_relay_phase{phase=\"streaming\"}"); got != 1 {
		t.Errorf("active relay's streaming phase gauge = %v, want 1", got)
	}

	load := faulttest.StartLoad(env, 2*time.Millisecond)
	load.WaitWritten(ctx, t, 300)
	active.kill()
	killed := time.Now()
	standby.waitReadyz(ctx, "streaming after the active relay died", streaming)
	takeover := time.Since(killed)
	if takeover > 10*time.Second {
		t.Errorf("standby took %s to take over, want under 10 s", takeover)
	}
	recovery := faulttest.CatchUp(ctx, t, env, env.Slot, killed)
	load.WaitWritten(ctx, t, len(load.Written())+300)
	load.Stop()
	rep := faulttest.Verify(ctx, t, env, env.Slot)
	t.Logf("standby streaming %s after kill -9 of the active relay (--standby-poll 1s); caught up after %s",
		takeover.Round(time.Millisecond), recovery.Round(time.Millisecond))
	rep.Log(t, "kill -9 of the active relay, hot standby takes over", takeover)
}
