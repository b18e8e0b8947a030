package sink

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/rs/zerolog"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// TLS configures an encrypted connection to the brokers.
type TLS struct {
	Enabled            bool
	CAFile             string // PEM; empty uses the system pool
	CertFile, KeyFile  string // client certificate for mTLS
	InsecureSkipVerify bool
}

// SASL configures broker authentication.
type SASL struct {
	Mechanism string // "", PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
	User      string
	Password  string
}

// Config configures the producer. Start from DefaultConfig: Validate
// refuses what the producer cannot run with rather than guessing it.
type Config struct {
	Brokers  []string
	ClientID string
	// Compression is none, gzip, snappy, lz4 or zstd.
	Compression string
	// Linger waits this long to fill a batch; 0 sends as soon as the
	// previous request returns (batches still form under load).
	Linger time.Duration
	// BatchBytes, with a Linger, sends a batch before the linger ends once
	// it holds this many bytes. Without a Linger it has no effect: sarama
	// would otherwise hold records until the size is reached.
	BatchBytes int
	// MaxMessageBytes is the largest record accepted; larger ones are
	// undeliverable. Keep it at or under the topic's max.message.bytes.
	MaxMessageBytes int
	// RetryMax bounds sarama's retries of a failing batch. While it
	// retries, sarama holds the partition's later batches behind it and
	// nothing is resent. Once it gives up, the producer's gate keeps the
	// later batches out of Kafka (see gate), the session ends and the next
	// one resends from the slot, in order. The default, 100 retries at up
	// to RetryBackoffMax apart, rides out about 8 minutes of outage before
	// that restart. sarama keeps 32 bytes per retry level for every
	// partition it writes to (32 KB each at 1000 retries: 64 MB for 2,000
	// single-partition topics, docs/benchmarks.md).
	RetryMax int
	// RetryBackoff is the first wait between retries; it doubles per retry
	// of a batch up to RetryBackoffMax.
	RetryBackoff    time.Duration
	RetryBackoffMax time.Duration
	// Timeout bounds dialing, each request and the broker's wait for
	// replicas.
	Timeout time.Duration
	TLS     TLS
	SASL    SASL
	// TopicWait is how long a topic Kafka does not know may stay missing
	// before a record to it is undeliverable, measured from the first
	// failure of a record to it (across sinks sharing a MissingTopics).
	// Until then such a failure is a retriable *TopicWaitError: the
	// session ends and the next one resends the record. Creating a topic
	// (auto-create on a slow controller, a first record to a new routed
	// topic) can outlast sarama's metadata retries (~5 s), which are
	// shared by every topic and so not lengthened for one. 0 makes a
	// missing topic undeliverable at once. The default, 60 s, is the Java
	// producer's max.block.ms, its wait for a topic's metadata.
	TopicWait time.Duration
	// StopAtUndeliverable stops the producer sending at the first record
	// Kafka refuses for good: every later record fails (retriably) instead
	// of reaching Kafka. For a relay that halts at such a record: were the
	// records after it delivered, raising the limit that refused it and
	// restarting would put it behind its own aggregate's later events.
	StopAtUndeliverable bool
	// Transactions, when Enabled, makes the producer exactly-once (NewTxn).
	Transactions Transactions
}

// Transactions configures the exactly-once producer (see Txn).
type Transactions struct {
	Enabled bool
	// ID is the transactional.id. Two relays on one slot must share it, so
	// that the one taking over fences the other; wire derives it from the
	// database's system identifier and the slot when it is empty.
	ID string
	// OffsetsTopic holds the committed positions, keyed by PositionKey;
	// created compacted with one partition when missing.
	OffsetsTopic string
	// PositionKey is this relay's key in OffsetsTopic (the database's
	// system identifier and the slot: several relays may share the topic).
	PositionKey string
	// Slot is written into each position, for operators reading the topic.
	Slot string
	// Timeline and WALEnd describe the database at the session's start
	// (wire fills them): a position of another timeline is not used, and
	// one ahead of WALEnd refuses the start (see Txn).
	Timeline uint32
	WALEnd   outboxrelay.LSN
	// CommitInterval ends a Kafka transaction at least this often.
	CommitInterval time.Duration
	// CommitBytes ends a Kafka transaction early once its records' keys
	// and values reach this size.
	CommitBytes int
	// Timeout is the transaction.timeout.ms the broker aborts an open
	// transaction after (a relay that died holding one).
	Timeout time.Duration
}

// DefaultTransactions are the exactly-once defaults (Enabled false).
func DefaultTransactions() Transactions {
	return Transactions{
		OffsetsTopic:   "outbox-relay.offsets",
		CommitInterval: 100 * time.Millisecond,
		CommitBytes:    4 << 20,
		Timeout:        time.Minute,
	}
}

// errors reports the fields NewTxn refuses.
func (t Transactions) errors() []error {
	if !t.Enabled {
		return nil
	}
	var errs []error
	if len(t.ID) > 249 {
		errs = append(errs, field("Transactions.ID", "%d bytes: use at most 249", len(t.ID)))
	}
	if t.OffsetsTopic == "" || len(t.OffsetsTopic) > 249 || strings.ContainsFunc(t.OffsetsTopic, func(r rune) bool {
		return !(r == '.' || r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) {
		errs = append(errs, field("Transactions.OffsetsTopic", "%q: a topic name is 1 to 249 of a-z, A-Z, 0-9, '.', '_' and '-'", t.OffsetsTopic))
	}
	if t.CommitInterval <= 0 {
		errs = append(errs, field("Transactions.CommitInterval", "%s: must be positive", t.CommitInterval))
	}
	if t.CommitBytes <= 0 {
		errs = append(errs, field("Transactions.CommitBytes", "%d: must be positive", t.CommitBytes))
	}
	if t.Timeout < time.Second || t.Timeout < 2*t.CommitInterval {
		errs = append(errs, field("Transactions.Timeout", "%s: use at least 1s and twice the commit interval (%s)", t.Timeout, t.CommitInterval))
	}
	return errs
}

// DefaultConfig returns the defaults documented in outbox-relay run --help.
func DefaultConfig() Config {
	return Config{
		ClientID:        "outbox-relay",
		Compression:     "none",
		BatchBytes:      1 << 20,
		MaxMessageBytes: 1000000,
		RetryMax:        100,
		RetryBackoff:    100 * time.Millisecond,
		RetryBackoffMax: 5 * time.Second,
		Timeout:         10 * time.Second,
		TopicWait:       60 * time.Second,
		Transactions:    DefaultTransactions(),
	}
}

// protocolVersion is the Kafka release whose request versions the producer
// speaks (sarama's Config.Version): Produce v9, Metadata v11, InitProducerId
// and ApiVersions as of Kafka 2.8. It is sarama's default, pinned here so a
// sarama upgrade does not change it unnoticed. Kafka 4.0 removed every
// request version older than Kafka 2.1 (KIP-896), so a baseline below
// sarama.V2_1_0_0 would be refused by Kafka 4 brokers; brokers from 2.8 on
// accept this one. `make test-kafka` runs the suites against Apache Kafka
// 4.4.0 and 3.9.1 with it.
var protocolVersion = sarama.V2_8_0_0

// metadataBackoff is the wait between metadata retries.
const metadataBackoff = 500 * time.Millisecond

// retryBackoff is the wait before retry number retries of a batch: base,
// doubling per retry, at most ceiling. sarama also calls it with retries 0
// (a new record that found no leader), which waits base like retry 1; a
// shift by retries-1 panicked there. Doubling stops at the ceiling, so no
// count overflows.
func retryBackoff(retries int, base, ceiling time.Duration) time.Duration {
	d := base
	for i := 1; i < retries && d < ceiling; i++ {
		d *= 2
	}
	return max(min(d, ceiling), 0)
}

// Validate reports every field of c the sink refuses, as
// *outboxrelay.FieldError values joined.
func (c Config) Validate() error {
	_, err := c.saramaConfig()
	return err
}

// field is a *outboxrelay.FieldError of this package's Config.
func field(name, format string, args ...any) error {
	return &outboxrelay.FieldError{Pkg: "sink", Field: name, Problem: fmt.Sprintf(format, args...)}
}

// limitErrors are the sizes and durations sarama's own Validate would
// refuse, checked here so the error names this Config's field (and so the
// flag) and comes with every other problem at once.
func (c Config) limitErrors() []error {
	var errs []error
	if c.MaxMessageBytes <= 0 {
		errs = append(errs, field("MaxMessageBytes", "%d: must be positive", c.MaxMessageBytes))
	}
	if c.Timeout <= 0 {
		errs = append(errs, field("Timeout", "%s: must be positive", c.Timeout))
	}
	if c.Linger < 0 {
		errs = append(errs, field("Linger", "%s: use 0 (send when the previous request returns) or a positive duration", c.Linger))
	}
	if c.Linger > 0 && c.BatchBytes <= 0 {
		errs = append(errs, field("BatchBytes", "%d: must be positive when Linger is set", c.BatchBytes))
	}
	if c.SASL.Mechanism != "" && c.SASL.Password == "" {
		errs = append(errs, field("SASL.Password", "SASL needs a password"))
	}
	return errs
}

// saramaConfig builds the producer configuration and refuses anything
// outside the safe set.
func (c Config) saramaConfig() (*sarama.Config, error) {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, field("Brokers", "at least one Kafka broker is required"))
	}
	sc := sarama.NewConfig()
	sc.ClientID = c.ClientID
	sc.Version = protocolVersion
	sc.Producer.Idempotent = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Net.MaxOpenRequests = 1
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.Flush.Frequency = c.Linger
	if c.Linger > 0 {
		sc.Producer.Flush.Bytes = c.BatchBytes
	}
	sc.Producer.MaxMessageBytes = c.MaxMessageBytes
	sc.Producer.Retry.Max = c.RetryMax
	if c.RetryMax < 0 || c.RetryMax > 100000 {
		errs = append(errs, field("RetryMax", "%d: use 0 to 100000", c.RetryMax))
	}
	sc.Producer.Retry.Backoff = c.RetryBackoff
	if c.RetryBackoff <= 0 || c.RetryBackoffMax < c.RetryBackoff {
		errs = append(errs, field("RetryBackoff", "%s..%s (RetryBackoffMax): both must be positive, max >= min", c.RetryBackoff, c.RetryBackoffMax))
	}
	if c.TopicWait < 0 {
		errs = append(errs, field("TopicWait", "%s: use 0 (a missing topic is undeliverable at once) or a positive duration", c.TopicWait))
	}
	sc.Producer.Timeout = c.Timeout
	sc.Net.DialTimeout = c.Timeout
	sc.Net.ReadTimeout = c.Timeout + 5*time.Second // outlast the broker's own wait
	sc.Net.WriteTimeout = c.Timeout
	// An unknown topic is reported only after metadata retries (~5 s),
	// and final only after TopicWait (see waitForTopic): these retries are
	// shared by every topic, so they stay short.
	sc.Metadata.Retry.Max = 10
	sc.Metadata.Retry.Backoff = metadataBackoff

	switch strings.ToLower(c.Compression) {
	case "", "none":
		sc.Producer.Compression = sarama.CompressionNone
	case "gzip":
		sc.Producer.Compression = sarama.CompressionGZIP
	case "snappy":
		sc.Producer.Compression = sarama.CompressionSnappy
	case "lz4":
		sc.Producer.Compression = sarama.CompressionLZ4
	case "zstd":
		sc.Producer.Compression = sarama.CompressionZSTD
	default:
		errs = append(errs, field("Compression", "%q: use none, gzip, snappy, lz4 or zstd", c.Compression))
	}
	if c.TLS.Enabled {
		tc, err := c.TLS.config()
		if err != nil {
			errs = append(errs, err)
		}
		sc.Net.TLS.Enable = true
		sc.Net.TLS.Config = tc
	}
	if c.SASL.Mechanism != "" {
		if err := c.SASL.apply(sc); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, c.limitErrors()...)
	errs = append(errs, c.Transactions.errors()...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// What sarama refuses beyond the checks above names its own fields.
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("kafka producer config: %w", err)
	}
	return sc, nil
}

func (t TLS) config() (*tls.Config, error) {
	tc := &tls.Config{InsecureSkipVerify: t.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, field("TLS.CAFile", "read the Kafka CA file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, field("TLS.CAFile", "%s holds no PEM certificate", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, field("TLS.CertFile", "load the Kafka client certificate and key (TLS.KeyFile): %v", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func (s SASL) apply(sc *sarama.Config) error {
	sc.Net.SASL.Enable = true
	sc.Net.SASL.User = s.User
	sc.Net.SASL.Password = s.Password
	sc.Net.SASL.Handshake = true
	switch strings.ToUpper(s.Mechanism) {
	case "PLAIN":
		sc.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	case "SCRAM-SHA-256":
		sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return newSCRAM(sha256Hash) }
	case "SCRAM-SHA-512":
		sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return newSCRAM(sha512Hash) }
	default:
		return field("SASL.Mechanism", "%q: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
	}
	if s.User == "" {
		return field("SASL.User", "SASL needs a user")
	}
	return nil
}

// Option adjusts a Sink beyond its Config.
type Option func(*Sink)

// WithLogger sets the logger; the default discards.
func WithLogger(l zerolog.Logger) Option {
	return func(s *Sink) { s.log = l.With().Str("component", "sink").Logger() }
}

// WithMetrics makes the sink record into m.
func WithMetrics(m *Metrics) Option {
	return func(s *Sink) { s.metrics = m }
}
