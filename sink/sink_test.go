package sink

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

func TestMurmur2MatchesKafka(t *testing.T) {
	// Vectors from Kafka's UtilsTest.testMurmur2: a Java producer keyed the
	// same way must land on the same partition.
	for in, want := range map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	} {
		if got := int32(murmur2([]byte(in))); got != want {
			t.Errorf("murmur2(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestIsRetriable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{sarama.ErrNotEnoughReplicas, true},
		{sarama.ErrNotLeaderForPartition, true},
		{sarama.ErrOutOfBrokers, true},
		{sarama.ErrRequestTimedOut, true},
		{sarama.ErrMessageSizeTooLarge, false},
		{sarama.ErrInvalidTopic, false},
		{sarama.ErrTopicAuthorizationFailed, false},
		{sarama.ErrUnknownTopicOrPartition, false},
		{&DeliveryError{EventID: "e", Err: sarama.ErrMessageSizeTooLarge}, false},
		{fmt.Errorf("wrapped: %w", &DeliveryError{Err: sarama.ErrNotEnoughReplicas}), true},
		{&DeliveryError{Err: &TopicWaitError{Topic: "t", Err: sarama.ErrUnknownTopicOrPartition}}, true},
	} {
		if got := IsRetriable(tc.err); got != tc.want {
			t.Errorf("IsRetriable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestConfigRefusesUnsafeOrUnknownSettings(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"no brokers":          func(c *Config) { c.Brokers = nil },
		"bad compression":     func(c *Config) { c.Compression = "brotli" },
		"bad sasl":            func(c *Config) { c.SASL = SASL{Mechanism: "GSSAPI", User: "u"} },
		"sasl no user":        func(c *Config) { c.SASL = SASL{Mechanism: "PLAIN"} },
		"missing ca file":     func(c *Config) { c.TLS = TLS{Enabled: true, CAFile: "/nonexistent/ca.pem"} },
		"negative topic wait": func(c *Config) { c.TopicWait = -time.Second },
	} {
		cfg := DefaultConfig()
		cfg.Brokers = []string{"127.0.0.1:1"}
		mutate(&cfg)
		if _, err := New(cfg, func(uint64, error) {}); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	cfg := DefaultConfig()
	cfg.Brokers = []string{"127.0.0.1:1"}
	sc, err := cfg.saramaConfig()
	if err != nil {
		t.Fatal(err)
	}
	if !sc.Producer.Idempotent || sc.Producer.RequiredAcks != sarama.WaitForAll || sc.Net.MaxOpenRequests != 1 {
		t.Fatalf("producer is not idempotent/acks=all/one request: %+v", sc.Producer)
	}
	// Kafka 4 refuses request versions older than Kafka 2.1 (KIP-896).
	if sc.Version != protocolVersion || !sc.Version.IsAtLeast(sarama.V2_1_0_0) {
		t.Fatalf("protocol version %s, want %s (and at least 2.1.0 for Kafka 4)", sc.Version, protocolVersion)
	}
}

// TestSASLAgainstBroker authenticates with each mechanism against a kfake
// broker that requires it, and produces one acked record.
func TestSASLAgainstBroker(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
				kfake.Superuser(mech, "relay", "s3cret"), kfake.AllowAutoTopicCreation())
			if err != nil {
				t.Fatal(err)
			}
			defer cluster.Close()

			cfg := DefaultConfig()
			cfg.Brokers = cluster.ListenAddrs()
			cfg.SASL = SASL{Mechanism: mech, User: "relay", Password: "s3cret"}
			acked := make(chan error, 1)
			s, err := New(cfg, func(_ uint64, err error) { acked <- err })
			if err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- s.Run(runCtx) }()
			defer func() { stop(); <-done }()

			ev := &outboxrelay.Event{ID: "e1", Topic: "sasl.test", Key: []byte("e1"), Value: []byte("{}"), CommitTime: time.Now()}
			if err := s.Produce(ctx, ev, 1); err != nil {
				t.Fatalf("produce: %v", err)
			}
			select {
			case err := <-acked:
				if err != nil {
					t.Fatalf("ack: %v", err)
				}
			case err := <-done:
				t.Fatalf("sink stopped: %v", err)
			case <-ctx.Done():
				t.Fatal("no ack")
			}
		})
	}

	t.Run("wrong password is refused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "relay", "s3cret"))
		if err != nil {
			t.Fatal(err)
		}
		defer cluster.Close()
		cfg := DefaultConfig()
		cfg.Brokers = cluster.ListenAddrs()
		cfg.SASL = SASL{Mechanism: "SCRAM-SHA-256", User: "relay", Password: "wrong"}
		s, err := New(cfg, func(uint64, error) {})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Run(ctx); err == nil {
			t.Fatal("connected with a wrong password")
		} else if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("no answer: %v", err)
		}
	})
}
