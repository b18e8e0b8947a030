package relay

import (
	"errors"
	"strings"
	"testing"
)

// An id from a row or message is pasted into shell advice quoted, and a huge
// one is not pasted at all (found by review: a 1 MB id with a terminal
// escape sequence went into the error as is).
func TestAdviceQuotesTheEventID(t *testing.T) {
	e := &UndeliverableError{EventID: "x'; rm -rf ~; '", LSN: 10, CommitLSN: 12, Err: errors.New("refused")}
	if msg := e.Error(); !strings.Contains(msg, `--event 'x'\''; rm -rf ~; '\''' --yes`) {
		t.Errorf("advice does not quote the id: %s", msg)
	}
	huge := &UndeliverableError{EventID: strings.Repeat("A", 1<<20) + "\x1b[31m", LSN: 10, CommitLSN: 12, Err: errors.New("refused")}
	if msg := huge.Error(); len(msg) > 2000 || strings.Contains(msg, "\x1b") {
		t.Errorf("a 1 MB id made a %d-byte message (escape sequence kept: %v)", len(msg), strings.Contains(msg, "\x1b"))
	}
}
