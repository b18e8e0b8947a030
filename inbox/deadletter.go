package inbox

import (
	"context"
	"strconv"
	"strings"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"
)

// Headers a dead-letter record carries besides the original record's
// headers (its "id" among them). Its key and value are the original's,
// as received: a sealed value stays sealed.
const (
	HeaderError             = "error"
	HeaderOriginalTopic     = "original_topic"
	HeaderOriginalPartition = "original_partition"
	HeaderOriginalOffset    = "original_offset"
	HeaderAttempts          = "attempts"
	HeaderConsumerGroup     = "consumer_group"
)

// maxErrorHeader bounds the error text copied into a header.
const maxErrorHeader = 1024

// deadLetter copies rec to the dead-letter topic, retrying until the
// copy is acked; false when the session ended first (rec is then left
// for the partition's next owner, never dropped).
func (c *Consumer) deadLetter(sess context.Context, dlq sarama.SyncProducer, rec *sarama.ConsumerMessage, cause error, label string, attempts int) bool {
	pm := &sarama.ProducerMessage{Topic: c.cfg.DeadLetterTopic, Key: byteEncoder(rec.Key), Value: byteEncoder(rec.Value)}
	for _, h := range rec.Headers {
		if h != nil {
			pm.Headers = append(pm.Headers, *h)
		}
	}
	for _, h := range [][2]string{
		{HeaderError, truncate(cause.Error(), maxErrorHeader)},
		{HeaderOriginalTopic, rec.Topic},
		{HeaderOriginalPartition, strconv.Itoa(int(rec.Partition))},
		{HeaderOriginalOffset, strconv.FormatInt(rec.Offset, 10)},
		{HeaderAttempts, strconv.Itoa(attempts)},
		{HeaderConsumerGroup, c.cfg.Group},
	} {
		pm.Headers = append(pm.Headers, sarama.RecordHeader{Key: []byte(h[0]), Value: []byte(h[1])})
	}
	log := c.log.Error().Str("topic", rec.Topic).Int32("partition", rec.Partition).Int64("offset", rec.Offset).
		Str("dead_letter_topic", c.cfg.DeadLetterTopic).Str("cause", label).Err(cause)
	for try := 1; ; try++ {
		_, _, err := dlq.SendMessage(pm)
		if err == nil {
			log.Msg("record dead-lettered")
			c.m.deadLettered.WithLabelValues(rec.Topic, label).Inc()
			return true
		}
		c.log.Warn().Err(err).Str("dead_letter_topic", c.cfg.DeadLetterTopic).Msg("produce the dead-letter copy; retrying")
		if !sleep(sess, c.backoff(try)) {
			return false
		}
	}
}

// byteEncoder keeps a nil key or value nil (not an empty slice).
func byteEncoder(b []byte) sarama.Encoder {
	if b == nil {
		return nil
	}
	return sarama.ByteEncoder(b)
}

// truncate cuts s to at most n bytes, dropping a rune cut in half.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// recordLog is a log event with a record's fields.
func (c *Consumer) recordLog(msg Message) *zerolog.Logger {
	l := c.log.With().Str("topic", msg.Topic).Int32("partition", msg.Partition).Int64("offset", msg.Offset).
		Str("event_id", msg.ID).Logger()
	return &l
}
