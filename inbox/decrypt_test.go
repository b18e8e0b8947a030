package inbox_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/inbox"
	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/seal"
)

const testKeys = "k1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"

// sealed is a record as the relay writes it with --encryption-keys.
func sealed(t *testing.T, keys *seal.Keys, topic, id, aadID, key, value string) record {
	t.Helper()
	v, kid, err := keys.Seal([]byte(value), []byte(aadID))
	if err != nil {
		t.Fatal(err)
	}
	return record{topic: topic, id: id, key: key, value: string(v),
		headers: map[string]string{seal.HeaderAlgorithm: seal.Algorithm, seal.HeaderKeyID: kid}}
}

// Values the relay sealed reach the handler decrypted; a plain value
// passes through; a sealed value moved onto another event, or one the
// consumer has no keys for, is dead-lettered (still sealed), not applied.
// KeyFallback takes the id from the key when the header is missing.
func TestSealedValuesAndKeyFallback(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const topic = "orders"
	keys, err := seal.Parse([]byte(testKeys))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, topic)
	moved := sealed(t, keys, topic, "ev-moved", "ev-other", "a", "stolen")
	e.produce(ctx,
		sealed(t, keys, topic, "ev-sealed", "ev-sealed", "a", `{"secret": 1}`),
		record{topic: topic, id: "ev-plain", key: "a", value: "plain"},
		moved,
		record{topic: topic, key: "ev-by-key", value: "keyed"},
	)
	cfg := e.config("g1", recordEffect, topic)
	cfg.Keys, cfg.KeyFallback = keys, true
	r := e.start(cfg)
	e.waitEffects(ctx, 3)
	dead, err := kafkatest.ReadAll(ctx, e.kafka.Addrs(), []string{"g1.dead-letter"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.shutdown(t, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range e.effects(ctx) {
		got[f.id] = f.value
	}
	want := map[string]string{"ev-sealed": `{"secret": 1}`, "ev-plain": "plain", "ev-by-key": "keyed"}
	if len(got) != len(want) {
		t.Errorf("applied %v, want %v", got, want)
	}
	for id, v := range want {
		if got[id] != v {
			t.Errorf("event %s applied with value %q, want %q", id, got[id], v)
		}
	}
	if len(dead) != 1 || dead[0].Headers["id"] != "ev-moved" || string(dead[0].Value) != moved.value ||
		!strings.Contains(dead[0].Headers[inbox.HeaderError], "decrypt the record value") {
		t.Errorf("dead letters %+v, want ev-moved, still sealed, with a decrypt error", dead)
	}

	// Another group without keys: each sealed record is dead-lettered.
	cfg = e.config("g2", recordEffect, topic)
	e.start(cfg)
	dead, err = kafkatest.ReadAll(ctx, e.kafka.Addrs(), []string{"g2.dead-letter"}, 3)
	if err != nil {
		t.Fatal(err)
	}
	noKeys := 0
	for _, d := range dead {
		if strings.Contains(d.Headers[inbox.HeaderError], "Config.Keys is nil") {
			noKeys++
		}
	}
	if len(dead) != 3 || noKeys != 2 {
		t.Errorf("group without keys dead-lettered %d records, %d naming Config.Keys; want 3 (2 sealed, 1 without an id)", len(dead), noKeys)
	}
}
