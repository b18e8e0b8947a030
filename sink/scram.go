package sink

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// A SCRAM client (RFC 5802, RFC 7677) for sarama, which leaves the
// implementation to its users. Kept here so SCRAM needs no extra module.

// maxSCRAMIterations caps the PBKDF2 work a broker can ask for. The count
// comes from the server before it has proved anything; 2^31 iterations
// would hold a CPU for many minutes per connection attempt. Kafka itself
// accepts 4096 to 16384 (RFC 7677 asks for at least 4096); the cap leaves
// room for other brokers.
const maxSCRAMIterations = 100000

var (
	sha256Hash = sha256.New
	sha512Hash = sha512.New
)

type scram struct {
	h           func() hash.Hash
	user, pass  string
	clientNonce string
	firstBare   string
	serverSig   []byte
	step        int
	done        bool
}

func newSCRAM(h func() hash.Hash) *scram { return &scram{h: h} }

func (s *scram) Begin(user, pass, authzID string) error {
	var nonce [18]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return err
	}
	s.user, s.pass = user, pass
	s.clientNonce = base64.RawStdEncoding.EncodeToString(nonce[:])
	s.step, s.done = 0, false
	return nil
}

func (s *scram) Step(challenge string) (string, error) {
	s.step++
	switch s.step {
	case 1:
		s.firstBare = "n=" + escapeSCRAM(s.user) + ",r=" + s.clientNonce
		return "n,," + s.firstBare, nil
	case 2:
		return s.final(challenge)
	case 3:
		s.done = true
		attrs := scramAttrs(challenge)
		if e, ok := attrs["e"]; ok {
			return "", fmt.Errorf("SCRAM: server rejected authentication: %s", e)
		}
		sig, err := base64.StdEncoding.DecodeString(attrs["v"])
		if err != nil || !hmac.Equal(sig, s.serverSig) {
			return "", errors.New("SCRAM: server signature does not match; the broker is not who it claims")
		}
		return "", nil
	}
	return "", errors.New("SCRAM: unexpected extra step")
}

func (s *scram) Done() bool { return s.done }

func (s *scram) final(serverFirst string) (string, error) {
	attrs := scramAttrs(serverFirst)
	nonce, salt64, iter := attrs["r"], attrs["s"], attrs["i"]
	if !strings.HasPrefix(nonce, s.clientNonce) || len(nonce) == len(s.clientNonce) {
		return "", errors.New("SCRAM: server nonce does not extend ours")
	}
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil {
		return "", fmt.Errorf("SCRAM: bad salt: %w", err)
	}
	n, err := strconv.Atoi(iter)
	if err != nil || n < 1 {
		return "", fmt.Errorf("SCRAM: bad iteration count %q", iter)
	}
	if n > maxSCRAMIterations {
		return "", fmt.Errorf("SCRAM: the broker asks for %d iterations, more than the %d this client computes; "+
			"Kafka stores 4096 to 16384, so the broker is misconfigured or hostile", n, maxSCRAMIterations)
	}
	salted, err := pbkdf2.Key(s.h, s.pass, salt, n, s.h().Size())
	if err != nil {
		return "", fmt.Errorf("SCRAM: derive key: %w", err)
	}
	clientKey := s.hmac(salted, "Client Key")
	storedKey := s.sum(clientKey)
	withoutProof := "c=biws,r=" + nonce
	authMsg := s.firstBare + "," + serverFirst + "," + withoutProof
	clientSig := s.hmac(storedKey, authMsg)
	proof := make([]byte, len(clientKey))
	for i := range clientKey {
		proof[i] = clientKey[i] ^ clientSig[i]
	}
	s.serverSig = s.hmac(s.hmac(salted, "Server Key"), authMsg)
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
}

func (s *scram) hmac(key []byte, msg string) []byte {
	m := hmac.New(s.h, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func (s *scram) sum(b []byte) []byte {
	h := s.h()
	h.Write(b)
	return h.Sum(nil)
}

func scramAttrs(msg string) map[string]string {
	out := make(map[string]string)
	for _, part := range strings.Split(msg, ",") {
		if k, v, ok := strings.Cut(part, "="); ok {
			out[k] = v
		}
	}
	return out
}

func escapeSCRAM(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}
