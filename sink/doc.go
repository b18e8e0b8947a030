// Package sink produces Events to Kafka through a sarama AsyncProducer held
// to the only safe configuration for this job: idempotent, acks=all, one
// request in flight per broker. That keeps per-partition order across
// retries and writes no duplicates on request timeouts within a session.
//
// Produce hands an event to the producer and returns; the ack (success or
// final error) arrives later through the AckFunc given to New, called from
// the goroutine running Run. Errors are classified: IsRetriable errors call
// for tearing the session down and resending from the confirmed position;
// the rest (a record too large, a topic Kafka refuses) will never succeed
// and need an operator's decision. A refusal of a whole batch is not one:
// the sink resends that batch's records in smaller batches, down to one
// per request, before anything later (see Sink), so only the record Kafka
// refuses alone is reported. Nor is a topic Kafka does not know, at first:
// it may still be being created, so it is retriable (a *TopicWaitError)
// until it has been missing for Config.TopicWait, counted across sessions
// by a MissingTopics shared through WithMissingTopics.
//
// No code of the sink may panic on sarama's goroutines: its callbacks
// recover into a *PanicError that ends Run, and Panics routes sarama's own
// recovered panics (sarama.PanicHandler, set by cmd) the same way.
package sink
