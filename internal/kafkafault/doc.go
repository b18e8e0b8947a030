// Package kafkafault runs the faults only a real Apache Kafka cluster has
// against an in-process relay (issue 9): a broker killed (-9) or
// terminated under load, the leader of the busiest partitions killed in a
// three-broker cluster, two of three brokers stopped (NOT_ENOUGH_REPLICAS),
// a topic whose max.message.bytes is below one event, a missing topic with
// auto-create off, and SASL/SCRAM, TLS and ACL refusals.
//
// Each test checks the promise: nothing lost, per-aggregate order kept,
// and the slot never confirmed past an event Kafka has not acked: sampled
// while the fault lasts against an event that cannot be acked, and over
// the whole run against each record's LogAppendTime. Each logs one
// greppable line per fault,
//
//	KAFKAFAULT fault="..." written=N delivered=N missing=N duplicates=N reordered=N
//	  dead_letters=N outage=D recovery=D reconnects=N sink_retries=N
//
// It has only tests. They need Java 17+ and run only with
// OUTBOX_RELAY_APACHE_KAFKA=1 (see internal/apachekafka); otherwise every
// test skips and TestMain starts nothing, so `make test` stays Java-free.
// The relay is built by relaytest.Start (internal/wire), with
// Sink.Brokers set to the cluster's listeners; the write load and the
// outbox-side checks are internal/faulttest's.
package kafkafault
