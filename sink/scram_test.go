package sink

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

// TestSCRAMRefusesHugeIterationCount pins a broker-controlled CPU burn: the
// iteration count comes from the server's first message, before the
// server has proved anything, and 2^31 PBKDF2 rounds were computed as asked.
func TestSCRAMRefusesHugeIterationCount(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		iter    string
		refused bool
	}{
		{"2147483647", true},
		{"100001", true},
		{"4096", false},
		{"16384", false},
	} {
		s := newSCRAM(sha512Hash)
		if err := s.Begin("relay", "s3cret", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Step(""); err != nil {
			t.Fatal(err)
		}
		serverFirst := "r=" + s.clientNonce + "srv,s=" + base64.StdEncoding.EncodeToString([]byte("salt")) + ",i=" + tc.iter
		done := make(chan error, 1)
		go func() {
			_, err := s.Step(serverFirst)
			done <- err
		}()
		select {
		case err := <-done:
			switch {
			case tc.refused && (err == nil || !strings.Contains(err.Error(), "iterations")):
				t.Errorf("i=%s: got %v, want a refusal naming the iteration count", tc.iter, err)
			case !tc.refused && err != nil:
				t.Errorf("i=%s: %v", tc.iter, err)
			}
		case <-ctx.Done():
			t.Fatalf("i=%s: still deriving the key after 10 s", tc.iter)
		}
	}
}
