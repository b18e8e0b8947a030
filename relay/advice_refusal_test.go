package relay_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/outbox-relay/outbox-relay/relay"
)

// TestUndeliverableAdviceFitsTheEvent pins advice that could not match: an
// event with a NULL id was told to run "slot skip --event (no id)", and
// slot skip finds events by id. Without an id the way past it is to
// advance the slot just past the start of its transaction's commit record.
func TestUndeliverableAdviceFitsTheEvent(t *testing.T) {
	cause := errors.New("outbox row has a NULL id")
	for _, tc := range []struct {
		name     string
		err      relay.UndeliverableError
		want     string
		wantNone string
	}{
		{"with an id", relay.UndeliverableError{EventID: "e1", LSN: 0x100, CommitLSN: 0x200, Err: cause},
			"outbox-relay slot skip --event e1 --yes", "slot advance"},
		{"no id", relay.UndeliverableError{LSN: 0x100, CommitLSN: 0x200, Err: cause},
			"outbox-relay slot advance --to 0/201 --yes", "slot skip"},
		{"no id, no commit position", relay.UndeliverableError{LSN: 0x100, Err: cause},
			"outbox-relay slot peek", "slot skip"},
	} {
		msg := tc.err.Error()
		if !strings.Contains(msg, tc.want) || strings.Contains(msg, tc.wantNone) {
			t.Errorf("%s: %q, want %q and no %q", tc.name, msg, tc.want, tc.wantNone)
		}
	}
}
