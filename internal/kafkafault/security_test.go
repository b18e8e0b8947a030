package kafkafault_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/internal/apachekafka"
	"github.com/outbox-relay/outbox-relay/internal/eventually"
	"github.com/outbox-relay/outbox-relay/internal/faulttest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/sink"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// refusedWithin bounds how soon a relay that cannot connect must say why.
const refusedWithin = 20 * time.Second

// TestSecurity (fault 6) runs the relay against the edge node's SASL and
// TLS listeners and an ACL:
//
//   - SASL/SCRAM-SHA-512 with the right password delivers; with a wrong
//     one the relay fails at once with a message naming authentication;
//   - TLS verified through Sink.TLS.CAFile (--kafka-tls-ca) delivers;
//     without the CA it fails at once naming the certificate;
//   - an ACL denying the relay's principal WRITE on one topic: the event
//     routed there halts the relay with a message naming authorization
//     (halt), or is the only dead letter (dead-letter); the others are
//     delivered.
func TestSecurity(t *testing.T) {
	c := edge.get(t)
	sasl := func(pass string) func(*relaytest.Config) {
		return func(cfg *relaytest.Config) {
			cfg.Sink.Brokers = c.ListenerAddrs(saslListener)
			cfg.Sink.SASL = sink.SASL{Mechanism: apachekafka.ScramSHA512, User: relayUser, Password: pass}
		}
	}
	tls := func(caFile string) func(*relaytest.Config) {
		return func(cfg *relaytest.Config) {
			cfg.Sink.Brokers = c.ListenerAddrs(tlsListener)
			cfg.Sink.TLS = sink.TLS{Enabled: true, CAFile: caFile}
		}
	}
	for _, tc := range []struct {
		name  string
		setup func(*relaytest.Config)
		// refused, when set, is what the relay's failure must say.
		refused []string
	}{
		{"SCRAM-SHA-512", sasl(relayPass), nil},
		{"SCRAM-SHA-512 wrong password", sasl("not-" + relayPass), []string{"SASL", "uthenticat"}},
		{"TLS with the CA", tls(c.CAFile()), nil},
		{"TLS without the CA", tls(""), []string{"certificate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			e := newEnv(t, c, "security-"+strings.NewReplacer(" ", "-", "/", "-").Replace(strings.ToLower(tc.name)))
			e.createTopics(ctx, t, 3, nil, e.loadTopics()...)
			cfg := e.config()
			tc.setup(&cfg)
			run := relaytest.Start(t, cfg)
			e.waitSlot(ctx, t) // the relay streams from the slot it creates
			begin := time.Now()
			_, end := e.Insert(ctx, events("order", 10))
			if tc.refused != nil {
				took := checkRefused(ctx, t, e, run, begin, end, tc.refused)
				reconnects, retries := metrics(run)
				result{Recovery: took, Reconnects: reconnects, Retries: retries}.log(t, "listener: "+tc.name+" (recovery = time until refused)")
				return
			}
			rep, _ := e.verify(ctx, t)
			reconnects, retries := metrics(run)
			result{Report: rep, Reconnects: reconnects, Retries: retries}.log(t, "listener: "+tc.name)
		})
	}
	for _, mode := range []relay.Undeliverable{relay.Halt, relay.DeadLetter} {
		t.Run("ACL denies write/"+string(mode), func(t *testing.T) {
			testACL(t, c, mode, sasl(relayPass))
		})
	}
}

// events returns n events of one aggregate of type typ.
func events(typ string, n int) []relaytest.Event {
	var evs []relaytest.Event
	for seq := range n {
		evs = append(evs, relaytest.Event{AggregateType: typ, AggregateID: "agg-1", EventType: "Updated", Seq: seq})
	}
	return evs
}

// checkRefused checks a relay that cannot connect: within refusedWithin
// its state says why, in words naming want; it sends nothing, confirms
// nothing, and retries at the relay's backoff, not in a busy loop. It
// returns how long it took to say why.
func checkRefused(ctx context.Context, t *testing.T, e *env, run *relaytest.Running, begin time.Time, end outboxrelay.LSN, want []string) time.Duration {
	t.Helper()
	var st relay.State
	wait, cancel := context.WithTimeout(ctx, refusedWithin)
	defer cancel()
	eventually.True(wait, 10*time.Millisecond, func() bool {
		st = run.Relay.State()
		return st.Phase == relay.PhaseReconnecting || st.Phase == relay.PhaseStopped
	})
	took := time.Since(begin)
	if st.Phase != relay.PhaseReconnecting && st.Phase != relay.PhaseStopped {
		t.Fatalf("after %s the relay is %s %q: it did not report the refused connection", refusedWithin, st.Phase, st.Detail)
	}
	for _, w := range want {
		if !strings.Contains(st.Detail, w) {
			t.Errorf("the relay's reason %q does not name %q", st.Detail, w)
		}
	}
	time.Sleep(3 * time.Second) // how often it tries again over a few seconds
	reconnects, retries := metrics(run)
	// The relay's backoff (50 ms doubling to 500 ms here) allows about 9
	// sessions in 3 s.
	if reconnects > 12 {
		t.Errorf("%v reconnects in %s: a busy loop", reconnects, time.Since(begin).Round(time.Millisecond))
	}
	if n := len(e.read(ctx, t, e.loadTopics()...)); n != 0 {
		t.Errorf("%d records reached Kafka through a refused connection", n)
	}
	if got, err := e.confirmed(ctx); err != nil || got >= end {
		t.Errorf("slot confirmed %s (%v), at or past events that never reached Kafka (ending by %s)", got, err, end)
	}
	t.Logf("refused after %s: %s %q; %v reconnects and %v produce retries over %s",
		took.Round(time.Millisecond), st.Phase, st.Detail, reconnects, retries, time.Since(begin).Round(time.Millisecond))
	return took
}

// testACL denies the relay's principal WRITE on one topic and routes one
// event there between events to an allowed topic.
func testACL(t *testing.T, c *apachekafka.Cluster, mode relay.Undeliverable, sasl func(*relaytest.Config)) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := newEnv(t, c, "acl-"+string(mode))
	cfg := e.config()
	sasl(&cfg)
	cfg.Relay.OnUndeliverable = mode
	denied := e.topic("denied")
	e.createTopics(ctx, t, 3, nil, e.topic("order"), denied, cfg.Relay.DeadLetterTopic)
	denyWrite(ctx, t, c, denied, "User:"+relayUser)
	run := relaytest.Start(t, cfg)
	run.WaitReady(ctx, t)
	first, firstEnd := e.Insert(ctx, events("order", 5))
	bad, badEnd := e.Insert(ctx, events("denied", 1))
	e.Insert(ctx, []relaytest.Event{{AggregateType: "order", AggregateID: "agg-1", EventType: "Updated", Seq: 5}})
	if mode == relay.Halt {
		err := waitStopped(ctx, t, run)
		var ue *relay.UndeliverableError
		if !errors.As(err, &ue) {
			t.Fatalf("relay stopped with %v, want a *relay.UndeliverableError", err)
		}
		msg := err.Error()
		for _, want := range []string{bad[0].ID, fmt.Sprintf("%q", denied), "uthoriz", "grant the relay's principal WRITE"} {
			if !strings.Contains(msg, want) {
				t.Errorf("halt message %q does not name %q", msg, want)
			}
		}
		confirmed, err := e.confirmed(ctx)
		if err != nil || confirmed >= badEnd {
			t.Errorf("slot confirmed %s (%v), at or past the denied event (ending by %s)", confirmed, err, badEnd)
		}
		got := map[string]bool{}
		for _, r := range e.read(ctx, t, e.topic("order")) {
			got[r.Headers["id"]] = true
		}
		// The sink stops sending at the denied record, so earlier events
		// may be unsent; then the slot must not have confirmed them.
		for _, in := range first {
			if !got[in.ID] && confirmed >= firstEnd {
				t.Errorf("event %s, confirmed by the slot (at %s), is not in Kafka", in.ID, confirmed)
			}
		}
		reconnects, retries := metrics(run)
		t.Logf("halt message: %s", msg)
		result{Report: faulttest.Report{Written: len(first) + 2, Delivered: len(got)}, Reconnects: reconnects, Retries: retries}.log(t, "ACL denies write: halt")
		return
	}
	rep, _ := e.verify(ctx, t, bad[0].ID)
	dead := e.read(ctx, t, cfg.Relay.DeadLetterTopic)
	if len(dead) != 1 || dead[0].Headers[relay.HeaderID] != bad[0].ID {
		t.Fatalf("%d dead letters %v, want exactly one, for event %s", len(dead), deadIDs(dead), bad[0].ID)
	}
	if h := dead[0].Headers[relay.HeaderError]; !strings.Contains(h, "uthoriz") {
		t.Errorf("dead letter's error header %q does not name authorization", h)
	}
	reconnects, retries := metrics(run)
	if reconnects != 0 {
		t.Errorf("%v reconnects: dead-lettering must not restart the session", reconnects)
	}
	t.Logf("dead letter headers: %v", dead[0].Headers)
	result{Report: rep, DeadLetters: len(dead), Reconnects: reconnects, Retries: retries}.log(t, "ACL denies write: dead-letter")
}

// denyWrite creates an ACL denying principal WRITE on topic.
func denyWrite(ctx context.Context, t *testing.T, c *apachekafka.Cluster, topic, principal string) {
	t.Helper()
	admin, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	req := kmsg.NewPtrCreateACLsRequest()
	cr := kmsg.NewCreateACLsRequestCreation()
	cr.ResourceType, cr.ResourceName, cr.ResourcePatternType = kmsg.ACLResourceTypeTopic, topic, kmsg.ACLResourcePatternTypeLiteral
	cr.Principal, cr.Host = principal, "*"
	cr.Operation, cr.PermissionType = kmsg.ACLOperationWrite, kmsg.ACLPermissionTypeDeny
	req.Creations = append(req.Creations, cr)
	resp, err := req.RequestWith(ctx, admin)
	if err == nil {
		err = kerr.ErrorForCode(resp.Results[0].ErrorCode)
	}
	if err != nil {
		t.Fatalf("create ACL denying %s WRITE on %q: %v", principal, topic, err)
	}
}
