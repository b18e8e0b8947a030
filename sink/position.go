package sink

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pglogrepl"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// Position is how far the exactly-once producer has committed into Kafka:
// every event of every Postgres transaction whose commit record starts
// before Commit, and the first Events events of the transaction whose commit
// record starts at Commit (all of them unless the transaction was split
// across Kafka transactions to stay inside the memory caps). Postgres
// decodes a transaction the same way every time it re-sends it, so the
// count names the same events again as long as the relay maps the same
// changes to events; EventID, the last counted event's id, checks that.
// Timeline is the Postgres timeline the position was written on: a
// position of another timeline (a promoted replica, whose WAL forked) does
// not describe this WAL.
type Position struct {
	Commit   outboxrelay.LSN
	Events   int
	EventID  string
	Timeline uint32
}

// covers reports whether the events-th event (1-based) of the transaction
// committed at commit is already in Kafka.
func (p Position) covers(commit outboxrelay.LSN, events int) bool {
	return commit < p.Commit || (commit == p.Commit && events <= p.Events)
}

// after orders positions: the later of two is the one that covers more.
func (p Position) after(q Position) bool {
	return p.Commit > q.Commit || (p.Commit == q.Commit && p.Events > q.Events)
}

// positionRecord is the value written to the offsets topic, in the same
// Kafka transaction as the events it covers. Its key is the relay's
// PositionKey (the database's system identifier and the slot).
type positionRecord struct {
	Slot        string    `json:"slot"`
	CommitLSN   string    `json:"commit_lsn"`
	Events      int       `json:"events"`
	EventID     string    `json:"event_id,omitempty"`
	Timeline    uint32    `json:"timeline,omitempty"`
	CommittedAt time.Time `json:"committed_at"`
}

func encodePosition(slot string, p Position, now time.Time) []byte {
	b, _ := json.Marshal(positionRecord{Slot: slot, CommitLSN: p.Commit.String(), Events: p.Events,
		EventID: p.EventID, Timeline: p.Timeline, CommittedAt: now.UTC()})
	return b
}

func decodePosition(b []byte) (Position, error) {
	var r positionRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return Position{}, fmt.Errorf("decode position record: %w", err)
	}
	lsn, err := pglogrepl.ParseLSN(r.CommitLSN)
	if err != nil || r.Events < 0 {
		return Position{}, fmt.Errorf("decode position record: commit_lsn %q, events %d: not a position", r.CommitLSN, r.Events)
	}
	return Position{Commit: lsn, Events: r.Events, EventID: r.EventID, Timeline: r.Timeline}, nil
}

// fetchMaxBytes bounds one fetch of the offsets topic.
const fetchMaxBytes = 8 << 20

// readPosition returns the latest committed position stored under key in
// topic: in each partition the last committed record of the key in offset
// order (a tombstone resets it), and across partitions (a topic someone
// created with several, or grew, may hold older records of the key
// elsewhere) the one that covers most. It reads every partition up to the
// end offset it had when the read began: records after it are not this
// relay's (it fenced its own older producers first), and waiting for the
// last stable offset to reach it, for at most wait, sees past a
// transaction another relay has open on the topic; past the wait it
// returns the position below that transaction with a *StalePositionError. Kafka's read_committed
// fetch returns aborted records too, with the list of aborted
// transactions, and leaves their filtering to the client; sarama's
// consumer does that filtering but cannot say when it has read up to an
// offset (markers take offsets and are never delivered), so the partitions
// are fetched here directly.
func readPosition(client sarama.Client, topic, key string, wait time.Duration) (Position, error) {
	parts, err := client.Partitions(topic)
	if err != nil {
		return Position{}, fmt.Errorf("list partitions of offsets topic %q: %w", topic, err)
	}
	var best Position
	var stale error
	for _, p := range parts {
		pos, err := readPartitionPosition(client, topic, p, key, time.Now().Add(wait))
		var se *StalePositionError
		if errors.As(err, &se) {
			se.Topic, se.Partition = topic, p
			stale, err = se, nil
		}
		if err != nil {
			return Position{}, fmt.Errorf("read offsets topic %q partition %d: %w", topic, p, err)
		}
		if pos.after(best) {
			best = pos
		}
	}
	return best, stale
}

// readPartitionPosition fetches one partition from its start to the end
// offset it has now.
func readPartitionPosition(client sarama.Client, topic string, partition int32, key string, deadline time.Time) (Position, error) {
	off, err := client.GetOffset(topic, partition, sarama.OffsetOldest)
	if err != nil {
		return Position{}, fmt.Errorf("find its first offset: %w", err)
	}
	end, err := client.GetOffset(topic, partition, sarama.OffsetNewest)
	if err != nil {
		return Position{}, fmt.Errorf("find its end offset: %w", err)
	}
	f := committedFilter{key: key}
	for stalls := 0; off < end; {
		block, err := fetchBlock(client, topic, partition, off)
		if err != nil {
			return Position{}, err
		}
		next := f.scan(block, off)
		switch {
		case next > off:
			off, stalls = next, 0
		case block.LastStableOffset <= off:
			// Another producer's transaction is open below end: wait for
			// it a while, then take what is decided. A transaction can
			// also hang there (Apache Kafka after a broker restart, with a
			// client older than KIP-890): what lies above it is then not
			// committed, and the position below it stands; if the wait
			// gave up on a live one, events it covers are sent again.
			if time.Now().After(deadline) {
				return f.pos, &StalePositionError{LSO: block.LastStableOffset, End: end}
			}
			time.Sleep(100 * time.Millisecond)
		default:
			if stalls++; stalls >= 3 {
				return Position{}, fmt.Errorf("no records came back at offset %d below the last stable offset %d", off, block.LastStableOffset)
			}
		}
	}
	return f.pos, nil
}

// fetchBlock fetches one partition's records from off with read_committed.
func fetchBlock(client sarama.Client, topic string, partition int32, off int64) (*sarama.FetchResponseBlock, error) {
	leader, err := client.Leader(topic, partition)
	if err != nil {
		return nil, fmt.Errorf("find its leader: %w", err)
	}
	req := &sarama.FetchRequest{Version: 11, MaxWaitTime: 100, MinBytes: 1, MaxBytes: fetchMaxBytes,
		Isolation: sarama.ReadCommitted, SessionEpoch: -1}
	req.AddBlock(topic, partition, off, fetchMaxBytes, -1)
	resp, err := leader.Fetch(req)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	block := resp.GetBlock(topic, partition)
	if block == nil {
		return nil, errors.New("fetch: the broker returned no data for the partition")
	}
	if !errors.Is(block.Err, sarama.ErrNoError) {
		return nil, fmt.Errorf("fetch: %w", block.Err)
	}
	return block, nil
}

// committedFilter keeps the last committed position of one key, in offset
// order, across fetches, dropping the records of aborted transactions as
// the Kafka protocol prescribes: a transactional batch is aborted when its
// producer has an aborted transaction that began at or before the batch
// and whose abort marker has not been passed yet.
type committedFilter struct {
	key     string
	pos     Position
	aborted map[int64]bool // producer ids inside an aborted transaction
}

// scan reads the block's batches at or after off and below its last stable
// offset, and returns the offset after the last batch read.
func (f *committedFilter) scan(block *sarama.FetchResponseBlock, off int64) int64 {
	if f.aborted == nil {
		f.aborted = map[int64]bool{}
	}
	txns := append([]*sarama.AbortedTransaction(nil), block.AbortedTransactions...)
	sort.Slice(txns, func(i, j int) bool { return txns[i].FirstOffset < txns[j].FirstOffset })
	next := off
	for _, recs := range block.RecordsSet {
		b := recs.RecordBatch
		if b == nil || b.PartialTrailingRecord {
			continue
		}
		last := b.FirstOffset + int64(b.LastOffsetDelta)
		if last < off || b.FirstOffset >= block.LastStableOffset {
			continue
		}
		for len(txns) > 0 && txns[0].FirstOffset <= last {
			f.aborted[txns[0].ProducerID] = true
			txns = txns[1:]
		}
		f.batch(b)
		next = last + 1
	}
	return next
}

// batch applies one record batch.
func (f *committedFilter) batch(b *sarama.RecordBatch) {
	switch {
	case b.Control:
		// A marker ends its producer's transaction, committed or aborted.
		delete(f.aborted, b.ProducerID)
		return
	case b.IsTransactional && f.aborted[b.ProducerID]:
		return
	}
	for _, r := range b.Records {
		if string(r.Key) != f.key {
			continue
		}
		if r.Value == nil {
			f.pos = Position{} // deleted: the next start resends from the slot
			continue
		}
		if p, err := decodePosition(r.Value); err == nil {
			f.pos = p
		}
	}
}
