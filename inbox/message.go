package inbox

import (
	"time"

	"github.com/IBM/sarama"
)

// Header is one record header.
type Header struct {
	Key   string
	Value []byte
}

// Message is one record as the Handler sees it. Its slices belong to the
// handler for the call only.
type Message struct {
	// ID is the event id the inbox deduplicates on.
	ID        string
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	// Value is the record value, decrypted when the relay sealed it.
	Value     []byte
	Headers   []Header
	Timestamp time.Time
	// Attempt counts this record's attempts in this process, from 1.
	Attempt int
}

// Header returns the value of the last header named name.
func (m Message) Header(name string) ([]byte, bool) {
	for i := len(m.Headers) - 1; i >= 0; i-- {
		if m.Headers[i].Key == name {
			return m.Headers[i].Value, true
		}
	}
	return nil, false
}

func recordHeader(rec *sarama.ConsumerMessage, name string) ([]byte, bool) {
	for i := len(rec.Headers) - 1; i >= 0; i-- {
		if h := rec.Headers[i]; h != nil && string(h.Key) == name {
			return h.Value, true
		}
	}
	return nil, false
}
