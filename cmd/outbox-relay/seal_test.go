package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/internal/kafkatest"
	"github.com/outbox-relay/outbox-relay/internal/relaytest"
	"github.com/outbox-relay/outbox-relay/seal"
)

func randomKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func recordHeader(r kafkatest.Record) func(string) ([]byte, bool) {
	return func(name string) ([]byte, bool) {
		v, ok := r.Headers[name]
		return []byte(v), ok
	}
}

// With --encryption-keys every value leaves the relay (and replay) sealed;
// a consumer opens them all with the rotated key set, and a wrong key or a
// changed byte fails. No key reaches the logs or the metrics.
func TestEncryptedPayloadsRotateAndAuthenticate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newFixture(t)
	k1, k2 := randomKey(t), randomKey(t)
	before := writeFile(t, "keys-1", "# the first key encrypts\nk1 "+k1+"\n")
	rotated := writeFile(t, "keys-2", "k2 "+k2+"\nk1 "+k1+"\n")

	since := f.serverNow(ctx, t)
	d := f.start(ctx, t, "--encryption-keys", before)
	d.waitReady(ctx, t)
	first, lsn := f.insert(ctx, "order", "order", "order")
	f.WaitConfirmed(ctx, f.slot, lsn)
	_, scrape := d.get(t, "/metrics")
	logs := d.log.String() + scrape
	f.stopRelay(ctx, t, d)

	d = f.start(ctx, t, "--encryption-keys", rotated)
	d.waitReady(ctx, t)
	second, lsn := f.insert(ctx, "order", "order", "order")
	f.WaitConfirmed(ctx, f.slot, lsn)
	_, scrape = d.get(t, "/metrics")
	f.stopRelay(ctx, t, d)
	logs += d.log.String() + scrape
	all := append(first, second...)
	if _, err := f.cli(ctx, "replay", "--since", since.Format(time.RFC3339Nano), "--kafka-brokers", strings.Join(f.Kafka.Addrs(), ","),
		"--encryption-keys", rotated, "--yes"); err != nil {
		t.Fatal(err)
	}

	recs, err := kafkatest.ReadAll(ctx, f.Kafka.Addrs(), relaytest.Topics("order"), 2*len(all))
	if err != nil {
		t.Fatal(err)
	}
	payload := map[string]string{}
	wantKey := map[string]string{}
	for i, e := range all {
		payload[e.ID] = e.Payload
		wantKey[e.ID] = map[bool]string{true: "k1", false: "k2"}[i < len(first)]
	}
	keys, err := seal.Load(rotated)
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := seal.Parse([]byte("k1 " + randomKey(t) + "\nk2 " + randomKey(t) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		id := r.Headers["id"]
		if bytes.Contains(r.Value, []byte(payload[id])) || bytes.Contains(r.Value, []byte("événement")) {
			t.Errorf("record %s carries its payload in clear: %q", id, r.Value)
		}
		if r.Headers[seal.HeaderAlgorithm] != seal.Algorithm {
			t.Errorf("record %s headers %v: no %s=%s", id, r.Headers, seal.HeaderAlgorithm, seal.Algorithm)
		}
		want := wantKey[id]
		if r.Headers["replayed"] == "true" {
			want = "k2"
		}
		if got := r.Headers[seal.HeaderKeyID]; got != want {
			t.Errorf("record %s sealed with key %q, want %q", id, got, want)
		}
		got, err := keys.OpenRecord(recordHeader(r), r.Value)
		if err != nil || string(got) != payload[id] {
			t.Errorf("record %s opens to %q, %v; want %q", id, got, err, payload[id])
		}
		if _, err := wrong.OpenRecord(recordHeader(r), r.Value); !errors.Is(err, seal.ErrAuthentication) {
			t.Errorf("record %s with a wrong key: %v, want an authentication failure", id, err)
		}
		tampered := bytes.Clone(r.Value)
		tampered[len(tampered)/2] ^= 0x20
		if _, err := keys.OpenRecord(recordHeader(r), tampered); !errors.Is(err, seal.ErrAuthentication) {
			t.Errorf("record %s tampered: %v, want an authentication failure", id, err)
		}
	}
	for _, k := range []string{k1, k2} {
		if strings.Contains(logs, k) || strings.Contains(logs, k[:16]) {
			t.Fatal("a key appears in the relay's log or metrics")
		}
	}
}

// A missing or malformed key file stops run and replay at start, naming
// the problem and never the key.
func TestEncryptionKeysFileRefusedAtStart(t *testing.T) {
	key := randomKey(t)
	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	for _, tc := range []struct{ name, path, want string }{
		{"missing", filepath.Join(t.TempDir(), "nope"), "--encryption-keys: read encryption keys: open"},
		{"short key", writeFile(t, "short", "k1 "+key+"\nk2 "+short+"\n"), `line 2 (key "k2"): the key is 16 bytes; AES-256 needs 32`},
		{"empty", writeFile(t, "empty", "# no keys yet\n"), "no keys"},
	} {
		for _, cmd := range []string{"run", "replay"} {
			t.Run(tc.name+" "+cmd, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				args := []string{cmd, "--pg-url", "postgres://127.0.0.1:1/none", "--kafka-brokers", "127.0.0.1:1", "--encryption-keys", tc.path, "--metrics-addr", ""}
				if cmd == "replay" {
					args = []string{cmd, "--pg-url", "postgres://127.0.0.1:1/none", "--kafka-brokers", "127.0.0.1:1", "--encryption-keys", tc.path, "--since", "2026-01-01", "--yes"}
				}
				var out, errOut bytes.Buffer
				err := run(ctx, args, noEnv, &out, &errOut)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("%s = %v, want %q", cmd, err, tc.want)
				}
				if strings.Contains(err.Error(), key[:16]) || strings.Contains(errOut.String(), key[:16]) || strings.Contains(err.Error(), short) {
					t.Fatalf("the error shows a key: %v", err)
				}
			})
		}
	}
}
