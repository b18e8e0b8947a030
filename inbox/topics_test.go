package inbox_test

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-relay/outbox-relay/inbox"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
)

var regexpAll = regexp.MustCompile(".*")

// assigned returns the topics assigned to the group's members.
func (e *env) assigned(ctx context.Context, group string) []string {
	e.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kafka.Addrs()...))
	if err != nil {
		e.t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDescribeGroupsRequest()
	req.Groups = []string{group}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil || len(resp.Groups) != 1 {
		e.t.Fatalf("describe group %s: %v", group, err)
	}
	var out []string
	for _, m := range resp.Groups[0].Members {
		var a kmsg.ConsumerMemberAssignment
		if err := a.ReadFrom(m.MemberAssignment); err != nil {
			e.t.Fatalf("decode the assignment: %v", err)
		}
		for _, t := range a.Topics {
			out = append(out, t.Topic)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TopicRegex follows topics created while the consumer runs, and never
// subscribes to the dead-letter topic, which a catch-all regex matches:
// consuming its own dead letters would loop.
func TestTopicRegexFollowsNewTopics(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	e := newEnv(t, "t.a")
	e.produce(ctx, record{topic: "t.a", id: "bad", key: "k", value: "x"}, record{topic: "t.a", id: "a1", key: "k", value: "0"})
	h := func(ctx context.Context, tx pgx.Tx, msg inbox.Message) error {
		if msg.ID == "bad" {
			return errors.New("refused")
		}
		return recordEffect(ctx, tx, msg)
	}
	cfg := e.config("g1", h)
	cfg.Topics, cfg.TopicRegex = nil, regexpAll
	cfg.TopicRefresh = 200 * time.Millisecond
	e.start(cfg)
	e.waitEffects(ctx, 1)
	if _, err := kafkatest.ReadAll(ctx, e.kafka.Addrs(), []string{"g1.dead-letter"}, 1); err != nil {
		t.Fatal(err)
	}
	e.produce(ctx, record{topic: "t.b", id: "b1", key: "k", value: "0"})
	fs := e.waitEffects(ctx, 2)
	if countByID(fs)["b1"] != 1 {
		t.Fatalf("effects %v, want b1 from the new topic", fs)
	}
	want := []string{"t.a", "t.b"}
	var got []string
	if !eventually.True(ctx, 50*time.Millisecond, func() bool {
		got = e.assigned(ctx, "g1")
		return slices.Equal(got, want)
	}) {
		t.Fatalf("group assigned %v, want %v (never the dead-letter topic)", got, want)
	}
	if n, err := kafkatest.Count(ctx, e.kafka.Addrs(), []string{"g1.dead-letter"}); err != nil || n != 1 {
		t.Errorf("dead-letter topic holds %d records (%v), want 1", n, err)
	}
}
