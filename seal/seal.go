package seal

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// Record headers of a sealed value, and the algorithm's name in them.
const (
	HeaderAlgorithm = "encryption"
	HeaderKeyID     = "encryption-key-id"
	Algorithm       = "AES-256-GCM"
	// HeaderEventID is the header holding the event id, the associated
	// data (the relay sets it on every record).
	HeaderEventID = "id"
)

const (
	keySize   = 32
	nonceSize = 12
	maxIDLen  = 64
)

type key struct {
	id   string
	aead cipher.AEAD
}

// Keys is a key set: the first seals, all open.
type Keys struct {
	keys []key
}

// Load reads a key file (see Parse).
func Load(path string) (*Keys, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read encryption keys: %w", err)
	}
	k, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("encryption keys %s: %w", path, err)
	}
	return k, nil
}

// Parse reads a key set: one key per line, `<key-id> <key>`, the key 32
// bytes in standard base64 (`head -c 32 /dev/urandom | base64`). Key ids
// are 1 to 64 ASCII letters, digits, '.', '_' or '-', each used once.
// Blank lines and lines starting with # are skipped. The first key seals.
// Errors name the line, never the key.
func Parse(b []byte) (*Keys, error) {
	var ks Keys
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want `<key-id> <base64 key>`, found %d field(s)", n, len(fields))
		}
		id, err := keyID(fields[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if prev, dup := seen[id]; dup {
			return nil, fmt.Errorf("line %d: key id %q is already used on line %d; give each key its own id", n, id, prev)
		}
		seen[id] = n
		aead, err := newAEAD(fields[1])
		if err != nil {
			return nil, fmt.Errorf("line %d (key %q): %w", n, id, err)
		}
		ks.keys = append(ks.keys, key{id: id, aead: aead})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(ks.keys) == 0 {
		return nil, errors.New("no keys: write one line `<key-id> <base64 key>` (the first key encrypts)")
	}
	return &ks, nil
}

func keyID(s string) (string, error) {
	// A rejected id is never quoted: it may be a key written in the id's
	// place (a base64 key fits the length and fails on its '=').
	if len(s) > maxIDLen {
		return "", fmt.Errorf("the key id is %d bytes; use at most %d (write '<key-id> <base64 key>')", len(s), maxIDLen)
	}
	for i, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return "", fmt.Errorf("the key id has a character other than ASCII letters, digits, '.', '_' and '-' at byte %d "+
				"(write '<key-id> <base64 key>', the id first)", i+1)
		}
	}
	return s, nil
}

// newAEAD decodes a key; its errors say what is wrong without the value.
func newAEAD(b64 string) (cipher.AEAD, error) {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, errors.New("the key is not standard base64; generate one with `head -c 32 /dev/urandom | base64`")
	}
	if len(raw) != keySize {
		return nil, fmt.Errorf("the key is %d bytes; AES-256 needs %d (`head -c 32 /dev/urandom | base64`)", len(raw), keySize)
	}
	block, err := aes.NewCipher(raw)
	clear(raw)
	if err != nil {
		return nil, errors.New("the key is not a valid AES key")
	}
	return cipher.NewGCM(block)
}

// IDs lists the key ids, the sealing one first.
func (k Keys) IDs() []string {
	ids := make([]string, len(k.keys))
	for i, kk := range k.keys {
		ids[i] = kk.id
	}
	return ids
}

// String names the key ids only, so a Keys printed by mistake shows no key.
func (k Keys) String() string { return "seal.Keys" + fmt.Sprint(k.IDs()) }

// GoString is String, for %#v.
func (k Keys) GoString() string { return k.String() }

// Seal encrypts value with the first key, eventID as associated data, and
// returns the sealed value and that key's id.
func (k *Keys) Seal(value, eventID []byte) ([]byte, string, error) {
	kk := k.keys[0]
	out := make([]byte, nonceSize, nonceSize+len(value)+kk.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, "", fmt.Errorf("seal: read a nonce: %w", err)
	}
	return kk.aead.Seal(out, out[:nonceSize], value, eventID), kk.id, nil
}

// Open decrypts a value sealed with key keyID for eventID.
func (k *Keys) Open(keyID string, eventID, sealed []byte) ([]byte, error) {
	for _, kk := range k.keys {
		if kk.id != keyID {
			continue
		}
		if len(sealed) < nonceSize+kk.aead.Overhead() {
			return nil, ErrAuthentication
		}
		out, err := kk.aead.Open(nil, sealed[:nonceSize], sealed[nonceSize:], eventID)
		if err != nil {
			return nil, ErrAuthentication
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w %q; add it back to the key file", ErrUnknownKey, keyID)
}

// OpenRecord decrypts a record's value with the headers the relay sets:
// header(name) returns a header's value and whether the record has it.
func (k *Keys) OpenRecord(header func(name string) ([]byte, bool), value []byte) ([]byte, error) {
	alg, ok := header(HeaderAlgorithm)
	if !ok || string(alg) != Algorithm {
		return nil, ErrNotSealed
	}
	keyID, ok := header(HeaderKeyID)
	if !ok {
		return nil, fmt.Errorf("%w: no %s header", ErrNotSealed, HeaderKeyID)
	}
	// A record without an id (a dead-letter copy of a row with a NULL
	// id) was sealed with empty associated data.
	id, _ := header(HeaderEventID)
	return k.Open(string(keyID), id, value)
}

// Event returns ev with its value sealed and the seal headers added; ev is
// not changed (its slices may be shared). The associated data is ev.ID.
// A nil value (a tombstone) stays nil: there is nothing to hide.
func (k *Keys) Event(ev *outboxrelay.Event) (outboxrelay.Event, error) {
	c := *ev
	if ev.Value == nil {
		return c, nil
	}
	sealed, keyID, err := k.Seal(ev.Value, []byte(ev.ID))
	if err != nil {
		return c, err
	}
	c.Value = sealed
	c.Headers = append(ev.Headers[:len(ev.Headers):len(ev.Headers)],
		outboxrelay.Header{Key: HeaderAlgorithm, Value: []byte(Algorithm)},
		outboxrelay.Header{Key: HeaderKeyID, Value: []byte(keyID)})
	return c, nil
}
