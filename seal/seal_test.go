package seal

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

func newKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func parse(t *testing.T, text string) *Keys {
	t.Helper()
	k, err := Parse([]byte(text))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return k
}

// headers is a record's headers as a consumer sees them.
func headers(hs []outboxrelay.Header) func(string) ([]byte, bool) {
	return func(name string) ([]byte, bool) {
		for _, h := range hs {
			if h.Key == name {
				return h.Value, true
			}
		}
		return nil, false
	}
}

func TestRotationWrongKeyAndTampering(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	before := parse(t, "# first key\nk1 "+k1+"\n")
	rotated := parse(t, "k2 "+k2+"\n\nk1 "+k1+"\n")
	ev := &outboxrelay.Event{ID: "e-1", Value: []byte(`{"secret": 42}`), Headers: []outboxrelay.Header{{Key: "id", Value: []byte("e-1")}}}

	old, err := before.Event(ev)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := rotated.Event(ev)
	if err != nil {
		t.Fatal(err)
	}
	if string(ev.Value) != `{"secret": 42}` || len(ev.Headers) != 1 {
		t.Fatalf("Event changed its argument: %+v", ev)
	}
	if id, _ := headers(cur.Headers)(HeaderKeyID); string(id) != "k2" {
		t.Fatalf("rotated set sealed with %q, want the first key k2", id)
	}
	for _, sealed := range []outboxrelay.Event{old, cur} {
		if bytes.Contains(sealed.Value, ev.Value) {
			t.Fatal("sealed value holds the plaintext")
		}
		got, err := rotated.OpenRecord(headers(sealed.Headers), sealed.Value)
		if err != nil || !bytes.Equal(got, ev.Value) {
			t.Fatalf("rotated set opens %q, %v", got, err)
		}
	}
	if _, err := before.OpenRecord(headers(cur.Headers), cur.Value); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("old set opening a k2 record: %v, want ErrUnknownKey", err)
	}
	wrong := parse(t, "k2 "+newKey(t)+"\n")
	if _, err := wrong.OpenRecord(headers(cur.Headers), cur.Value); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("wrong key: %v, want ErrAuthentication", err)
	}
	for i := range cur.Value {
		tampered := bytes.Clone(cur.Value)
		tampered[i] ^= 1
		if _, err := rotated.OpenRecord(headers(cur.Headers), tampered); !errors.Is(err, ErrAuthentication) {
			t.Fatalf("byte %d flipped: %v, want ErrAuthentication", i, err)
		}
	}
	if _, err := rotated.Open("k2", []byte("e-2"), cur.Value); !errors.Is(err, ErrAuthentication) {
		t.Fatalf("value moved to another event: %v, want ErrAuthentication", err)
	}
	if _, err := rotated.OpenRecord(headers(nil), cur.Value); !errors.Is(err, ErrNotSealed) {
		t.Fatalf("no headers: %v, want ErrNotSealed", err)
	}
	again, _ := rotated.Event(ev)
	if bytes.Equal(again.Value, cur.Value) {
		t.Fatal("two seals of one value are equal: the nonce is not fresh")
	}
}

func TestParseRefusesMalformedFilesWithoutShowingKeys(t *testing.T) {
	good := newKey(t)
	short := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcde"))
	for _, tc := range []struct{ name, text, want string }{
		{"empty", "# nothing\n\n", "no keys"},
		{"one field", "k1\n", "line 1: want `<key-id> <base64 key>`, found 1 field(s)"},
		{"three fields", "k1 " + good + " extra\n", "found 3 field(s)"},
		{"short key", "k1 " + short + "\n", `line 1 (key "k1"): the key is 31 bytes; AES-256 needs 32`},
		{"not base64", "k1 " + good[:20] + "!!" + good[22:] + "\n", "not standard base64"},
		{"duplicate id", "k1 " + good + "\nk1 " + newKey(t) + "\n", `line 2: key id "k1" is already used on line 1`},
		{"bad id", "k/1 " + good + "\n", `character other than ASCII letters, digits, '.', '_' and '-' at byte 2`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.text))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, want %q", err, tc.want)
			}
			for _, f := range strings.Fields(tc.text) {
				if len(f) >= 20 && strings.Contains(err.Error(), f[:20]) {
					t.Fatalf("error shows key material: %v", err)
				}
			}
		})
	}
}

func TestKeysPrintNoKeyMaterial(t *testing.T) {
	k := newKey(t)
	ks := parse(t, "a "+k+"\nb "+newKey(t)+"\n")
	raw, _ := base64.StdEncoding.DecodeString(k)
	for _, s := range []string{fmt.Sprint(ks), fmt.Sprintf("%+v", ks), fmt.Sprintf("%#v", ks), fmt.Sprintf("%v", *ks)} {
		if strings.Contains(s, k) || strings.Contains(s, string(raw)) || strings.Contains(s, fmt.Sprintf("%x", raw[:8])) {
			t.Fatalf("formatted keys show a key: %s", s)
		}
	}
	if got := ks.String(); got != "seal.Keys[a b]" {
		t.Fatalf("String = %q", got)
	}
}

// BenchmarkEvent seals one event with a 500-byte payload, the relay's
// per-record cost of --encryption-keys.
func BenchmarkEvent(b *testing.B) {
	raw := make([]byte, 32)
	ks, err := Parse([]byte("k1 " + base64.StdEncoding.EncodeToString(raw) + "\n"))
	if err != nil {
		b.Fatal(err)
	}
	ev := &outboxrelay.Event{ID: "0195d6c2-6e4b-7cc1-9a3e-1f2d3c4b5a69", Value: bytes.Repeat([]byte("x"), 500),
		Headers: []outboxrelay.Header{{Key: "id", Value: []byte("0195d6c2-6e4b-7cc1-9a3e-1f2d3c4b5a69")}}}
	b.ReportAllocs()
	b.SetBytes(int64(len(ev.Value)))
	for b.Loop() {
		if _, err := ks.Event(ev); err != nil {
			b.Fatal(err)
		}
	}
}

// A key written where the id belongs is refused without quoting it (the
// review found the whole key in the error, which goes to the log).
func TestSwappedKeyIsNotQuoted(t *testing.T) {
	const key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	_, err := Parse([]byte(key + " a\n"))
	if err == nil {
		t.Fatal("a key in the id's place was accepted")
	}
	if strings.Contains(err.Error(), key[:16]) {
		t.Errorf("the error shows the key: %v", err)
	}
}
