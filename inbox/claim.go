package inbox

import (
	"context"
	"strconv"
	"time"

	"github.com/IBM/sarama"
)

// groupHandler is the sarama side: one ConsumeClaim goroutine per claimed
// partition, each handling its records in order.
type groupHandler struct {
	c    *Consumer
	work context.Context // outlives a session by ShutdownTimeout
	dlq  sarama.SyncProducer
}

func (h *groupHandler) Setup(sess sarama.ConsumerGroupSession) error {
	h.c.log.Info().Int32("generation", sess.GenerationID()).Interface("claims", sess.Claims()).Msg("partitions assigned")
	return nil
}

func (h *groupHandler) Cleanup(sess sarama.ConsumerGroupSession) error {
	h.c.log.Info().Int32("generation", sess.GenerationID()).Msg("partitions released; marked offsets committed")
	return nil
}

// ConsumeClaim handles one partition's records in offset order until the
// claim is revoked or the session ends. The record in flight then
// finishes (or, past ShutdownTimeout, rolls back) before it returns, and
// sarama releases the partition only after that.
func (h *groupHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	lag := h.c.m.lag.WithLabelValues(claim.Topic(), strconv.Itoa(int(claim.Partition())))
	defer h.c.m.lag.DeleteLabelValues(claim.Topic(), strconv.Itoa(int(claim.Partition())))
	// Records in flight when the partition is revoked get ShutdownTimeout
	// to commit; then their contexts end and they roll back.
	work, cancel := context.WithCancel(h.work)
	defer cancel()
	stop := context.AfterFunc(sess.Context(), func() { time.AfterFunc(h.c.cfg.ShutdownTimeout, cancel) })
	defer stop()
	for {
		select {
		case <-sess.Context().Done():
			return nil
		case rec, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			if !h.acquire(sess.Context()) {
				return nil
			}
			done := h.c.handleRecord(sess.Context(), work, h.dlq, rec)
			<-h.c.sem
			if !done {
				// Not applied, not dead-lettered: the session ended
				// first. The next owner of the partition gets it again.
				return nil
			}
			sess.MarkMessage(rec, "")
			lag.Set(float64(max(claim.HighWaterMarkOffset()-rec.Offset-1, 0)))
		}
	}
}

// acquire takes a concurrency token; false when the session ended first.
func (h *groupHandler) acquire(sess context.Context) bool {
	select {
	case h.c.sem <- struct{}{}:
		return true
	case <-sess.Done():
		return false
	}
}
