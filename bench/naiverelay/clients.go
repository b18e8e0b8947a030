package main

import (
	"context"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kgo"
)

// saramaProducer has the settings idempotence needs and the relay's
// defaults (no linger, no compression), nothing else.
type saramaProducer struct {
	ap   sarama.AsyncProducer
	done sync.WaitGroup
}

func newSarama(brokers []string) (*saramaProducer, error) {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_8_0_0
	cfg.Producer.Idempotent = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Return.Successes = true
	cfg.Producer.Retry.Max = 100
	ap, err := sarama.NewAsyncProducer(brokers, cfg)
	if err != nil {
		return nil, err
	}
	p := &saramaProducer{ap: ap}
	p.done.Add(2)
	go func() {
		defer p.done.Done()
		for m := range ap.Successes() {
			m.Metadata.(func())()
		}
	}()
	go func() {
		defer p.done.Done()
		for e := range ap.Errors() {
			panic(e.Err) // naive: a lost event must not pass unnoticed
		}
	}()
	return p, nil
}

func (p *saramaProducer) send(topic string, key, value []byte, ts time.Time, ack func()) {
	p.ap.Input() <- &sarama.ProducerMessage{Topic: topic, Key: sarama.ByteEncoder(key),
		Value: sarama.ByteEncoder(value), Timestamp: ts, Metadata: ack}
}

func (p *saramaProducer) close() {
	p.ap.AsyncClose()
	p.done.Wait()
}

// franzProducer is franz-go's idempotent producer with no linger and no
// compression (its default is snappy), buffering at most the relay's
// in-flight cap. franz-go keeps up to 5 requests in flight per broker
// with idempotence, and that cannot be lowered: unlike sarama's one.
type franzProducer struct{ cl *kgo.Client }

func newFranz(brokers []string) (*franzProducer, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.MaxBufferedRecords(10000),
		kgo.AllowAutoTopicCreation(), kgo.RecordRetries(100))
	if err != nil {
		return nil, err
	}
	return &franzProducer{cl: cl}, nil
}

func (p *franzProducer) send(topic string, key, value []byte, ts time.Time, ack func()) {
	p.cl.Produce(context.Background(), &kgo.Record{Topic: topic, Key: key, Value: value, Timestamp: ts},
		func(_ *kgo.Record, err error) {
			if err != nil {
				panic(err)
			}
			ack()
		})
}

func (p *franzProducer) close() {
	_ = p.cl.Flush(context.Background())
	p.cl.Close()
}
