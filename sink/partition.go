package sink

import (
	"fmt"

	"github.com/IBM/sarama"
)

// partitioner hashes the event's partition key with murmur2, as Kafka's
// Java client does, so a Java or Debezium producer sending the same key
// picks the same partition.
type partitioner struct{ s *Sink }

func (p partitioner) Partition(m *sarama.ProducerMessage, n int32) (part int32, err error) {
	defer p.s.recoverPanic(&err)
	d, _ := m.Metadata.(*delivery)
	switch {
	case n <= 0:
		return 0, fmt.Errorf("sink: topic %q has no partitions", m.Topic)
	case d == nil:
		return 0, nil
	}
	return PartitionFor(d.partitionKey, n), nil
}

func (partitioner) RequiresConsistency() bool { return true }

// PartitionFor is the partition a key lands on among n.
func PartitionFor(key []byte, n int32) int32 {
	return int32(murmur2(key)&0x7fffffff) % n
}

// murmur2 is Kafka's org.apache.kafka.common.utils.Utils.murmur2.
func murmur2(data []byte) uint32 {
	const (
		seed = 0x9747b28c
		m    = 0x5bd1e995
		r    = 24
	)
	n := len(data)
	h := uint32(seed) ^ uint32(n)
	for i := 0; i+4 <= n; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := data[n&^3:]
	switch len(tail) {
	case 3:
		h ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(tail[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
