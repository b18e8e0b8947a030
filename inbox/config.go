package inbox

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/outbox-relay/outbox-relay/seal"
)

// Handler applies one event. It must write its effects through tx: the
// inbox commits tx (and with it the event id) only when Handler returns
// nil. It must not commit or roll back tx. ctx ends when the record's
// time is up (shutdown or rebalance past Config.ShutdownTimeout).
// Handlers of different partitions run concurrently.
type Handler func(ctx context.Context, tx pgx.Tx, msg Message) error

// DB is what the inbox needs from Postgres; *pgxpool.Pool has it. Each
// concurrently handled record holds one connection, so the pool should
// have at least Config.MaxConcurrency+1 connections (one for pruning).
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Defaults, documented in docs/inbox.md.
const (
	DefaultTable           = "inbox"
	DefaultIDHeader        = "id"
	DefaultMaxConcurrency  = 8
	DefaultMaxAttempts     = 5
	DefaultBackoff         = 200 * time.Millisecond
	DefaultMaxBackoff      = 10 * time.Second
	DefaultRetention       = 30 * 24 * time.Hour
	DefaultPruneInterval   = 10 * time.Minute
	DefaultPruneBatch      = 1000
	DefaultShutdownTimeout = 30 * time.Second
	DefaultTopicRefresh    = 30 * time.Second
	// DefaultDeadLetterSuffix follows the group name in the default
	// dead-letter topic: "<group>.dead-letter".
	DefaultDeadLetterSuffix = ".dead-letter"
)

// Config configures a Consumer. Zero fields take the defaults above;
// Brokers, Group, DB, Handler and one of Topics or TopicRegex are required.
type Config struct {
	Brokers []string
	// Group is the Kafka consumer group, and the inbox table's
	// consumer_group column: two groups sharing a table each apply every
	// event once.
	Group string
	// Topics to consume; or TopicRegex, matched against the cluster's
	// topics every TopicRefresh (a new matching topic joins the group's
	// subscription). The dead-letter topic and Kafka's internal topics
	// (__*) never match; anchor the regex (^outbox\.event\.) so that
	// other topics, such as the relay's --exactly-once-offsets-topic, do
	// not either.
	Topics       []string
	TopicRegex   *regexp.Regexp
	TopicRefresh time.Duration

	DB      DB
	Handler Handler
	// Table is the inbox table, created by CreateSchema; a name, or
	// schema.name. Default "inbox".
	Table string

	// IDHeader is the record header holding the event id (the relay's
	// default "id"). KeyFallback uses the record key when the header is
	// missing; leave it off unless the key is the event id (the relay's
	// default --key-column id), or two events with one key collapse.
	IDHeader    string
	KeyFallback bool
	// Keys opens values the relay sealed with --encryption-keys; nil
	// dead-letters sealed records (ErrSealed).
	Keys *seal.Keys
	// ReadUncommitted reads records of open and aborted Kafka
	// transactions too. The default, read_committed, pairs with the
	// relay's --exactly-once; without it the setting changes nothing.
	ReadUncommitted bool

	// MaxConcurrency bounds the records handled at once, across
	// partitions (each holds a database connection). Default 8.
	MaxConcurrency int
	// MaxAttempts bounds the attempts of a record whose handler fails
	// retryably, the first included; Backoff doubles after each, up to
	// MaxBackoff. Defaults 5, 200ms, 10s.
	MaxAttempts int
	Backoff     time.Duration
	MaxBackoff  time.Duration
	// DeadLetterTopic receives records that failed for good. Default
	// "<Group>.dead-letter".
	DeadLetterTopic string

	// Retention is how long applied ids are kept (default 30 days);
	// PruneInterval how often older ones are deleted, PruneBatch rows per
	// statement. A negative Retention keeps ids forever.
	Retention     time.Duration
	PruneInterval time.Duration
	PruneBatch    int

	// ShutdownTimeout bounds how long in-flight records may run after
	// Run's context ends or their partition is revoked. Default 30s.
	ShutdownTimeout time.Duration

	// Sarama, if set, is the base client configuration (TLS, SASL,
	// version, timeouts); it is copied, and the settings the inbox needs
	// (offsets marked only after commit, isolation level, producer acks
	// for dead letters) are set on the copy.
	Sarama *sarama.Config
}

func (c *Config) setDefaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&c.TopicRefresh, DefaultTopicRefresh)
	set(&c.Backoff, DefaultBackoff)
	set(&c.MaxBackoff, DefaultMaxBackoff)
	set(&c.Retention, DefaultRetention)
	set(&c.PruneInterval, DefaultPruneInterval)
	set(&c.ShutdownTimeout, DefaultShutdownTimeout)
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if c.IDHeader == "" {
		c.IDHeader = DefaultIDHeader
	}
	if c.MaxConcurrency == 0 {
		c.MaxConcurrency = DefaultMaxConcurrency
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.PruneBatch == 0 {
		c.PruneBatch = DefaultPruneBatch
	}
	if c.DeadLetterTopic == "" && c.Group != "" {
		c.DeadLetterTopic = c.Group + DefaultDeadLetterSuffix
	}
}

// validate reports every problem, joined.
func (c *Config) validate() error {
	var errs []error
	add := func(ok bool, field, problem, fix string) {
		if !ok {
			errs = append(errs, configError(field, problem, fix))
		}
	}
	add(len(c.Brokers) > 0, "Brokers", "is empty", "name at least one host:port")
	add(c.Group != "", "Group", "is empty", "name the consumer group")
	add(len(c.Topics) > 0 || c.TopicRegex != nil, "Topics", "and TopicRegex are both empty", "name the topics to consume")
	add(len(c.Topics) == 0 || c.TopicRegex == nil, "Topics", "and TopicRegex are both set", "use one of them")
	add(c.DB != nil, "DB", "is nil", "pass a *pgxpool.Pool")
	add(c.Handler != nil, "Handler", "is nil", "pass the function that applies an event")
	for _, t := range c.Topics {
		add(t != c.DeadLetterTopic, "Topics", fmt.Sprintf("holds the dead-letter topic %q", t), "set another DeadLetterTopic")
	}
	if _, err := tableIdent(c.Table); err != nil {
		errs = append(errs, err)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"TopicRefresh", c.TopicRefresh}, {"Backoff", c.Backoff}, {"MaxBackoff", c.MaxBackoff},
		{"PruneInterval", c.PruneInterval}, {"ShutdownTimeout", c.ShutdownTimeout}} {
		add(d.v > 0, d.field, fmt.Sprintf("is %s", d.v), "use a positive duration")
	}
	add(c.MaxConcurrency > 0, "MaxConcurrency", fmt.Sprintf("is %d", c.MaxConcurrency), "use at least 1")
	add(c.MaxAttempts > 0, "MaxAttempts", fmt.Sprintf("is %d", c.MaxAttempts), "use at least 1")
	add(c.PruneBatch > 0, "PruneBatch", fmt.Sprintf("is %d", c.PruneBatch), "use at least 1")
	return errors.Join(errs...)
}

// saramaConfig is the client configuration: the user's base with what
// the inbox's promise needs forced on.
func (c *Config) saramaConfig() *sarama.Config {
	sc := sarama.NewConfig()
	if c.Sarama != nil {
		cp := *c.Sarama
		sc = &cp
	}
	sc.Consumer.Return.Errors = true
	// Offsets are marked only after the database commit; the periodic
	// and final commits then never run ahead of applied records.
	sc.Consumer.Offsets.AutoCommit.Enable = true
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sc.Consumer.IsolationLevel = sarama.ReadCommitted
	if c.ReadUncommitted {
		sc.Consumer.IsolationLevel = sarama.ReadUncommitted
	}
	if !sc.Version.IsAtLeast(sarama.V0_11_0_0) {
		sc.Version = sarama.DefaultVersion
	}
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	return sc
}

// Option adjusts a Consumer beyond its Config.
type Option func(*Consumer)

// WithLogger sets the logger (default zerolog.Nop()).
func WithLogger(l zerolog.Logger) Option {
	return func(c *Consumer) { c.log = l.With().Str("component", "inbox").Logger() }
}

// WithRegistry registers the inbox metrics on reg (default: none kept).
func WithRegistry(reg prometheus.Registerer) Option {
	return func(c *Consumer) { c.reg = reg }
}
