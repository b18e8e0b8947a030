package sink

import (
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"
	"github.com/rs/zerolog"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

func positionBatch(offset, producer int64, key string, p Position) *sarama.Records {
	b := &sarama.RecordBatch{FirstOffset: offset, ProducerID: producer, IsTransactional: true,
		Records: []*sarama.Record{{Key: []byte(key), Value: encodePosition("s", p, time.Unix(0, 0))}}}
	return &sarama.Records{RecordBatch: b}
}

func markerBatch(offset, producer int64) *sarama.Records {
	return &sarama.Records{RecordBatch: &sarama.RecordBatch{FirstOffset: offset, ProducerID: producer, IsTransactional: true, Control: true}}
}

// A position written in an aborted transaction is never taken as
// committed, even when it is the latest; a later transaction of the same
// producer, after its abort marker, is.
func TestCommittedFilterSkipsAborted(t *testing.T) {
	lsn := func(s string) pglogrepl.LSN { l, _ := pglogrepl.ParseLSN(s); return l }
	committed := Position{Commit: lsn("0/100"), Events: 3}
	aborted := Position{Commit: lsn("0/900"), Events: 1}
	later := Position{Commit: lsn("0/200"), Events: 7}
	block := &sarama.FetchResponseBlock{
		LastStableOffset:    8,
		AbortedTransactions: []*sarama.AbortedTransaction{{ProducerID: 2, FirstOffset: 2}},
		RecordsSet: []*sarama.Records{
			positionBatch(0, 1, "k", committed), markerBatch(1, 1),
			positionBatch(2, 2, "k", aborted), markerBatch(3, 2),
			positionBatch(4, 2, "other", Position{Commit: lsn("1/0"), Events: 1}), markerBatch(5, 2),
			positionBatch(6, 2, "k", later), markerBatch(7, 2),
		},
	}
	f := committedFilter{key: "k"}
	if next := f.scan(block, 0); next != 8 {
		t.Errorf("scan stopped at offset %d, want 8", next)
	}
	if f.pos != later {
		t.Errorf("position %+v, want %+v (the aborted %+v must be skipped)", f.pos, later, aborted)
	}
}

func TestPositionCovers(t *testing.T) {
	p := Position{Commit: 100, Events: 2}
	for _, c := range []struct {
		commit pglogrepl.LSN
		n      int
		want   bool
	}{{99, 5, true}, {100, 1, true}, {100, 2, true}, {100, 3, false}, {101, 1, false}} {
		if got := p.covers(c.commit, c.n); got != c.want {
			t.Errorf("covers(%s, %d) = %v, want %v", c.commit, c.n, got, c.want)
		}
	}
}

// A position of another timeline (a promoted replica) is not used; one
// ahead of the database's WAL (a restore) refuses the start.
func TestJudgeStart(t *testing.T) {
	tx := &Txn{log: zerolog.Nop(), tx: Transactions{PositionKey: "k", Timeline: 2, WALEnd: 1000}}
	if p, err := tx.judgeStart(Position{Commit: 500, Events: 3, Timeline: 1}); err != nil || p != (Position{}) {
		t.Errorf("another timeline's position: %+v, %v; want none used", p, err)
	}
	if p, err := tx.judgeStart(Position{Commit: 500, Events: 3, Timeline: 2}); err != nil || p.Commit != 500 {
		t.Errorf("this timeline's position: %+v, %v; want it used", p, err)
	}
	if _, err := tx.judgeStart(Position{Commit: 2000, Events: 1, Timeline: 2}); !outboxrelay.IsConfigError(err) {
		t.Errorf("a position ahead of the WAL: %v, want a ConfigError", err)
	}
}
