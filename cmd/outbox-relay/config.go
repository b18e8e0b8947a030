package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/sink"
	"gopkg.in/yaml.v3"
)

// options holds every flag; each subcommand registers the groups it uses.
type options struct {
	configFile string

	pg          replication.Config
	kafka       sink.Config
	kafkaBroker string
	relay       relay.Config

	metricsAddr string
	logFormat   string
	logLevel    string

	output    string // table or json, for the operator commands
	acceptGap bool
}

func newOptions() *options {
	return &options{
		pg:          replication.DefaultConfig(),
		kafka:       sink.DefaultConfig(),
		relay:       relay.DefaultConfig(),
		metricsAddr: "127.0.0.1:9187",
		logFormat:   "json",
		logLevel:    "info",
		output:      "table",
	}
}

// registerOutput adds --output to the operator commands.
func (o *options) registerOutput(fs *flag.FlagSet) {
	fs.StringVar(&o.output, "output", o.output, "table (readable) or json (for scripts)")
}

// registerGap adds the daemon's way past a reported gap.
func (o *options) registerGap(fs *flag.FlagSet) {
	fs.BoolVar(&o.acceptGap, "accept-gap", false, "start even though the slot skipped events behind the relay's back (see docs/operations.md, 'Gap report'); "+
		"applies to one gap, pass it on the command line once rather than in the environment")
}

// registerPG adds the connection, table and routing flags every command shares.
func (o *options) registerPG(fs *flag.FlagSet) {
	fs.StringVar(&o.configFile, "config", "", "YAML file of flag values (keys are flag names)")
	fs.StringVar(&o.pg.ConnString, "pg-url", "", "Postgres libpq URL (required); the relay adds replication=database itself")
	fs.StringVar(&o.pg.Table, "table", o.pg.Table, "outbox table, schema-qualified")
	fs.StringVar(&o.pg.Publication, "publication", o.pg.Publication, "publication to stream (created FOR TABLE <table> WITH (publish = 'insert') if missing)")
	fs.StringVar(&o.pg.Slot, "slot", o.pg.Slot, "logical replication slot (pgoutput; created if missing)")
	fs.StringVar(&o.pg.Routing.Topic, "topic", o.pg.Routing.Topic, "topic template; {column} is replaced by the row's value")
	fs.StringVar(&o.pg.Routing.KeyColumn, "key-column", o.pg.Routing.KeyColumn, "column used as the message key (the event id: the idempotency key)")
	fs.StringVar(&o.pg.Routing.PartitionBy, "partition-by", o.pg.Routing.PartitionBy, "column whose murmur2 hash picks the partition; 'key' hashes the message key")
	fs.StringVar(&o.pg.Columns.ID, "id-column", o.pg.Columns.ID, "event id column")
	fs.StringVar(&o.pg.Columns.AggregateType, "aggregate-type-column", o.pg.Columns.AggregateType, "aggregate type column")
	fs.StringVar(&o.pg.Columns.AggregateID, "aggregate-id-column", o.pg.Columns.AggregateID, "aggregate id column")
	fs.StringVar(&o.pg.Columns.EventType, "event-type-column", o.pg.Columns.EventType, "event type column")
	fs.StringVar(&o.pg.Columns.Payload, "payload-column", o.pg.Columns.Payload, "payload column (jsonb, json, text or bytea)")
	fs.StringVar(&o.pg.Columns.Headers, "headers-column", o.pg.Columns.Headers, "jsonb column whose string entries become record headers; '' for none")
	fs.StringVar(&o.logFormat, "log-format", o.logFormat, "log format: json or console")
	fs.StringVar(&o.logLevel, "log-level", o.logLevel, "log level: debug, info, warn, error")
}

// registerRun adds the daemon's flags.
func (o *options) registerRun(fs *flag.FlagSet) {
	fs.BoolVar(&o.pg.Create, "create-missing", o.pg.Create, "create a missing publication and slot at start")
	fs.DurationVar(&o.pg.StatusInterval, "status-interval", o.pg.StatusInterval, "how often the confirmed position is sent to Postgres (keep under wal_sender_timeout/2)")
	fs.StringVar(&o.kafkaBroker, "kafka-brokers", "", "Kafka bootstrap brokers, comma-separated host:port (required)")
	fs.StringVar(&o.kafka.ClientID, "kafka-client-id", o.kafka.ClientID, "Kafka client id")
	fs.StringVar(&o.kafka.Compression, "kafka-compression", o.kafka.Compression, "none, gzip, snappy, lz4 or zstd")
	fs.DurationVar(&o.kafka.Linger, "kafka-linger", o.kafka.Linger, "wait this long to fill a batch; 0 sends when the previous request returns")
	fs.IntVar(&o.kafka.BatchBytes, "kafka-batch-bytes", o.kafka.BatchBytes, "with --kafka-linger: send a batch early once it holds this many bytes")
	fs.IntVar(&o.kafka.MaxMessageBytes, "kafka-max-message-bytes", o.kafka.MaxMessageBytes, "largest record; larger events are undeliverable")
	fs.IntVar(&o.kafka.RetryMax, "kafka-retry-max", o.kafka.RetryMax, "producer retries of a batch (in order) before the session restarts from the slot and resends; the default rides out ~80 min of outage")
	fs.DurationVar(&o.kafka.RetryBackoff, "kafka-retry-backoff", o.kafka.RetryBackoff, "first wait between producer retries (doubles per retry)")
	fs.DurationVar(&o.kafka.RetryBackoffMax, "kafka-retry-backoff-max", o.kafka.RetryBackoffMax, "longest wait between producer retries")
	fs.DurationVar(&o.kafka.Timeout, "kafka-timeout", o.kafka.Timeout, "dial, request and replica-ack timeout")
	fs.BoolVar(&o.kafka.TLS.Enabled, "kafka-tls", false, "connect to Kafka over TLS")
	fs.StringVar(&o.kafka.TLS.CAFile, "kafka-tls-ca", "", "PEM CA bundle for the brokers (default: system roots)")
	fs.StringVar(&o.kafka.TLS.CertFile, "kafka-tls-cert", "", "PEM client certificate (mTLS)")
	fs.StringVar(&o.kafka.TLS.KeyFile, "kafka-tls-key", "", "PEM client key (mTLS)")
	fs.BoolVar(&o.kafka.TLS.InsecureSkipVerify, "kafka-tls-insecure-skip-verify", false, "do not verify the brokers' certificates (testing only)")
	fs.StringVar(&o.kafka.SASL.Mechanism, "kafka-sasl-mechanism", "", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	fs.StringVar(&o.kafka.SASL.User, "kafka-sasl-user", "", "SASL user")
	fs.StringVar(&o.kafka.SASL.Password, "kafka-sasl-password", "", "SASL password (prefer the environment variable)")
	fs.IntVar(&o.relay.MaxInFlight, "max-in-flight", o.relay.MaxInFlight, "events produced but not yet confirmed; at the cap the WAL reader waits")
	fs.Int64Var(&o.relay.MaxInFlightBytes, "max-in-flight-bytes", o.relay.MaxInFlightBytes, "bytes (key, value, headers) of those events; bounds memory with large payloads; 0 disables")
	fs.DurationVar(&o.relay.ShutdownTimeout, "shutdown-timeout", o.relay.ShutdownTimeout, "on SIGTERM, how long to wait for in-flight acks")
	fs.DurationVar(&o.relay.BackoffMin, "backoff-min", o.relay.BackoffMin, "first wait after a failed session")
	fs.DurationVar(&o.relay.BackoffMax, "backoff-max", o.relay.BackoffMax, "longest wait between failed sessions")
	fs.DurationVar(&o.relay.StandbyPoll, "standby-poll", o.relay.StandbyPoll, "how often a standby tries to take over a slot held by another relay")
	fs.DurationVar(&o.relay.StallTimeout, "stall-timeout", o.relay.StallTimeout, "report stalled (/readyz 503) when events wait this long with no Kafka ack")
	fs.StringVar((*string)(&o.relay.OnUndeliverable), "on-undeliverable", string(o.relay.OnUndeliverable),
		"an event that can never be delivered (unmappable row, record Kafka refuses for good): 'halt' stops at it, 'dead-letter' copies it to --dead-letter-topic and moves on")
	fs.StringVar(&o.relay.DeadLetterTopic, "dead-letter-topic", o.relay.DeadLetterTopic, "topic for --on-undeliverable dead-letter; headers name the original topic, error, lsn and id")
	fs.StringVar(&o.metricsAddr, "metrics-addr", o.metricsAddr, "listen address for /metrics, /healthz and /readyz; '' disables")
}

// parse applies, in rising precedence, the file, the environment and the
// command line. Unknown file keys are errors: a typo must not pass silently.
func parse(fs *flag.FlagSet, o *options, args []string, getenv func(string) string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	fs.Usage = func() { printFlags(fs, stderr) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return flag.ErrHelp
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments: %v\n", fs.Args())
		return errUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if !set["config"] {
		if v := getenv(envName("config")); v != "" {
			o.configFile = v
		}
	}
	file := map[string]string{}
	if o.configFile != "" {
		var err error
		if file, err = readConfigFile(o.configFile); err != nil {
			return err
		}
	}
	var errs []error
	for k := range file {
		if fs.Lookup(k) == nil {
			errs = append(errs, fmt.Errorf("%s: unknown key %q", o.configFile, k))
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || f.Name == "config" {
			return
		}
		v, ok := getenvOK(getenv, envName(f.Name))
		src := "environment variable " + envName(f.Name)
		if !ok {
			v, ok = file[f.Name]
			src = o.configFile + " key " + f.Name
		}
		if ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", src, err))
			}
		}
	})
	return errors.Join(errs...)
}

func getenvOK(getenv func(string) string, k string) (string, bool) {
	v := getenv(k)
	return v, v != ""
}

// envName maps a flag to its variable: pg-url -> OUTBOX_RELAY_PG_URL.
func envName(flagName string) string {
	return "OUTBOX_RELAY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func readConfigFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		k = strings.ReplaceAll(k, "_", "-")
		switch v := v.(type) {
		case []any:
			parts := make([]string, len(v))
			for i, p := range v {
				parts[i] = fmt.Sprint(p)
			}
			out[k] = strings.Join(parts, ",")
		case nil:
			out[k] = ""
		default:
			out[k] = fmt.Sprint(v)
		}
	}
	return out, nil
}

func printFlags(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage: outbox-relay %s [flags]\n\nFlags (each also OUTBOX_RELAY_<NAME> in the environment or <name> in --config):\n", fs.Name())
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	sort.Strings(names)
	for _, n := range names {
		f := fs.Lookup(n)
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  --%s\n        %s (default %s; env %s)\n", n, f.Usage, def, envName(n))
	}
}

// finish fills derived fields and checks what flags alone can check.
func (o *options) finish() error {
	var errs []error
	if o.pg.ConnString == "" {
		errs = append(errs, errors.New("--pg-url is required (or OUTBOX_RELAY_PG_URL)"))
	}
	for _, b := range strings.Split(o.kafkaBroker, ",") {
		if b = strings.TrimSpace(b); b != "" {
			o.kafka.Brokers = append(o.kafka.Brokers, b)
		}
	}
	if o.logFormat != "json" && o.logFormat != "console" {
		errs = append(errs, fmt.Errorf("--log-format %q: use json or console", o.logFormat))
	}
	return errors.Join(errs...)
}
