package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/outbox-relay/outbox-relay/admin"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/replication"
	"github.com/outbox-relay/outbox-relay/route"
	"github.com/outbox-relay/outbox-relay/seal"
	"github.com/outbox-relay/outbox-relay/sink"
)

// options holds every flag; each subcommand registers the groups it uses.
type options struct {
	configFile string

	pg          replication.Config
	kafka       sink.Config
	kafkaBroker string
	relay       relay.Config
	retention   admin.RetentionConfig

	metricsAddr      string
	progressInterval time.Duration
	// pprofAddr serves /debug/pprof/ (pprofEnv): not a flag, a debugging aid.
	pprofAddr string
	logFormat string
	logLevel  string

	output    string // table or json, for the operator commands
	acceptGap bool
	preset    string // --preset: a route.Preset name, applied in parse
	// encryptionKeys is the --encryption-keys file; empty sends values in
	// clear.
	encryptionKeys string

	flags *flag.FlagSet // the parsed flags, to name them in config errors
	// cmdline names the flags given on the command line (not from the
	// environment or the file), to print commands that repeat them.
	cmdline map[string]bool
}

func newOptions() *options {
	return &options{
		pg:               replication.DefaultConfig(),
		kafka:            sink.DefaultConfig(),
		relay:            relay.DefaultConfig(),
		retention:        defaultRetention(),
		metricsAddr:      "127.0.0.1:9187",
		progressInterval: time.Minute,
		logFormat:        "json",
		logLevel:         "info",
		output:           "table",
	}
}

// defaultRetention is off (no age) with prune's defaults.
func defaultRetention() admin.RetentionConfig {
	return admin.RetentionConfig{
		Every: time.Hour,
		Prune: admin.PruneConfig{Column: "created_at", Batch: admin.DefaultPruneBatch, Pause: admin.DefaultPrunePause},
	}
}

// registerOutput adds --output to the operator commands.
func (o *options) registerOutput(fs *flag.FlagSet) {
	fs.StringVar(&o.output, "output", o.output, "table (readable) or json (for scripts)")
}

// registerGap adds the daemon's way past a reported gap.
func (o *options) registerGap(fs *flag.FlagSet) {
	fs.BoolVar(&o.acceptGap, "accept-gap", false, "start even though the slot skipped events behind the relay's back (see docs/operations.md, 'Gap report'), or past a halt the checkpoint record keeps; "+
		"applies to one gap: pass it on the command line, once (refused from the environment and --config)")
}

// registerPG adds the connection, table and routing flags every command shares.
func (o *options) registerPG(fs *flag.FlagSet) {
	fs.StringVar(&o.configFile, "config", "", "YAML file of flag values (keys are flag names)")
	fs.StringVar(&o.pg.ConnString, "pg-url", "", "Postgres libpq URL (required); the relay adds replication=database itself")
	fs.StringVar(&o.pg.Publication, "publication", o.pg.Publication, "publication to stream, name as written (created FOR TABLE <table> WITH (publish = 'insert', publish_via_partition_root = true) if missing)")
	fs.StringVar(&o.pg.Slot, "slot", o.pg.Slot, "logical replication slot (pgoutput; created if missing)")
	o.registerRouting(fs)
	fs.StringVar(&o.pg.MessagePrefix, "message-prefix", "", "also turn transactional logical messages pg_logical_emit_message(true, PREFIX, json) into events (PostgreSQL 14+); "+
		"with --table '' the outbox is table-less (see README 'A table-less outbox')")
	fs.StringVar(&o.logFormat, "log-format", o.logFormat, "log format: json or console")
	fs.StringVar(&o.logLevel, "log-level", o.logLevel, "log level: debug, info, warn, error")
}

// registerRouting adds the flags of one outbox: its table and how its rows
// become records. They are also the keys of an item of the config file's
// outboxes list.
func (o *options) registerRouting(fs *flag.FlagSet) {
	fs.StringVar(&o.pg.Table, "table", o.pg.Table, "outbox table as schema.table, names as written (case kept); double-quote a part holding a dot: \"my.schema\".outbox; '' with --message-prefix for none")
	fs.StringVar(&o.pg.Route.Topic, "topic", o.pg.Route.Topic, "topic template; {column} is replaced by the row's value")
	fs.StringVar(&o.pg.Route.KeyColumn, "key-column", o.pg.Route.KeyColumn, "column used as the message key (the event id: the idempotency key)")
	fs.StringVar(&o.pg.Route.PartitionBy, "partition-by", o.pg.Route.PartitionBy, "column whose murmur2 hash picks the partition; 'key' hashes the message key")
	fs.StringVar(&o.pg.Route.Columns.ID, "id-column", o.pg.Route.Columns.ID, "event id column")
	fs.StringVar(&o.pg.Route.Columns.AggregateType, "aggregate-type-column", o.pg.Route.Columns.AggregateType, "aggregate type column")
	fs.StringVar(&o.pg.Route.Columns.AggregateID, "aggregate-id-column", o.pg.Route.Columns.AggregateID, "aggregate id column")
	fs.StringVar(&o.pg.Route.Columns.EventType, "event-type-column", o.pg.Route.Columns.EventType, "event type column")
	fs.StringVar(&o.pg.Route.Columns.Payload, "payload-column", o.pg.Route.Columns.Payload, "payload column (jsonb, json, text, varchar or bytea)")
	fs.StringVar(&o.pg.Route.Columns.Headers, "headers-column", o.pg.Route.Columns.Headers, "jsonb column whose string entries become record headers; '' for none")
	fs.Var(presetFlag{&o.preset}, "preset", "start the routing flags from a preset: "+strings.Join(route.PresetNames(), ", ")+
		" (Debezium's Outbox Event Router defaults, see docs/migrating-from-debezium.md); flags you set win")
	fs.BoolVar(&o.pg.Route.TombstoneOnEmptyPayload, "tombstone-on-empty-payload", false,
		"a NULL payload becomes a tombstone (null value, same key and headers) instead of an undeliverable event")
	fs.Var((*fieldsFlag)(&o.pg.Route.Fields), "field", "place a column in every record: COLUMN:header[:ALIAS] or COLUMN:envelope[:ALIAS]; repeatable (comma-separated in the environment and the file)")
	fs.StringVar(&o.pg.Route.TimestampColumn, "timestamp-column", "", "timestamptz, timestamp or bigint (epoch ms) column for the record timestamp; '' for the commit time")
	fs.StringVar((*string)(&o.pg.Route.Envelope), "envelope", string(o.pg.Route.Envelope),
		"none (the payload as stored), cloudevents (CloudEvents 1.0 Kafka binding, binary mode: ce_* headers) or json (one versioned JSON document); see README 'Envelopes'")
	fs.StringVar(&o.pg.Route.Source, "cloudevents-source", "", "ce_source of --envelope cloudevents, a URI-reference; '' derives /<database>/<schema>/<table>")
}

// registerRun adds the daemon's flags.
func (o *options) registerRun(fs *flag.FlagSet) {
	fs.BoolVar(&o.pg.Create, "create-missing", o.pg.Create, "create a missing publication and slot at start")
	fs.DurationVar(&o.pg.StatusInterval, "status-interval", o.pg.StatusInterval, "how often the confirmed position is recorded and sent to Postgres (keep under wal_sender_timeout/2); a relay crash resends at most about this much")
	o.registerKafka(fs)
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
	fs.Var(age{&o.retention.Prune.OlderThan}, "retention", "delete outbox rows older than this (e.g. 7d), every --retention-interval, from the active relay only (not a standby); 0 keeps them")
	fs.DurationVar(&o.retention.Every, "retention-interval", o.retention.Every, "with --retention: how often to prune")
	fs.StringVar(&o.retention.Prune.Column, "created-at-column", o.retention.Prune.Column, "with --retention: timestamptz, timestamp or date column holding each row's creation time (it needs an index)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", o.metricsAddr, "listen address for the status page (/), /metrics, /healthz and /readyz; '' disables")
	fs.DurationVar(&o.progressInterval, "progress-interval", o.progressInterval, "log a progress line (events delivered and per second, confirmed position, lag) this often; 0 disables")
}

// registerKafka adds the producer's flags (run and replay).
func (o *options) registerKafka(fs *flag.FlagSet) {
	fs.StringVar(&o.encryptionKeys, "encryption-keys", "", "file of '<key-id> <base64 256-bit key>' lines: encrypt every record value with AES-256-GCM (the first key encrypts, all decrypt; see docs/operations.md, 'Encrypted payloads'); '' sends values as stored")
	fs.StringVar(&o.kafkaBroker, "kafka-brokers", "", "Kafka bootstrap brokers, comma-separated host:port (required)")
	fs.StringVar(&o.kafka.ClientID, "kafka-client-id", o.kafka.ClientID, "Kafka client id")
	fs.StringVar(&o.kafka.Compression, "kafka-compression", o.kafka.Compression, "none, gzip, snappy, lz4 or zstd")
	fs.DurationVar(&o.kafka.Linger, "kafka-linger", o.kafka.Linger, "wait this long to fill a batch; 0 sends when the previous request returns")
	fs.IntVar(&o.kafka.BatchBytes, "kafka-batch-bytes", o.kafka.BatchBytes, "with --kafka-linger: send a batch early once it holds this many bytes")
	fs.IntVar(&o.kafka.MaxMessageBytes, "kafka-max-message-bytes", o.kafka.MaxMessageBytes, "largest record; larger events are undeliverable")
	fs.IntVar(&o.kafka.RetryMax, "kafka-retry-max", o.kafka.RetryMax, "producer retries of a batch before the session restarts from the slot and resends (order is kept either way); the default retries ~8 min; each retry level costs 32 bytes per partition written to")
	fs.DurationVar(&o.kafka.RetryBackoff, "kafka-retry-backoff", o.kafka.RetryBackoff, "first wait between producer retries (doubles per retry)")
	fs.DurationVar(&o.kafka.RetryBackoffMax, "kafka-retry-backoff-max", o.kafka.RetryBackoffMax, "longest wait between producer retries")
	fs.DurationVar(&o.kafka.Timeout, "kafka-timeout", o.kafka.Timeout, "dial, request and replica-ack timeout")
	fs.DurationVar(&o.kafka.TopicWait, "kafka-topic-wait", o.kafka.TopicWait, "how long a topic Kafka does not know may stay missing (being created) before an event to it is undeliverable; "+
		"meanwhile the session restarts and resends it; 0: undeliverable at once")
	fs.BoolVar(&o.kafka.TLS.Enabled, "kafka-tls", false, "connect to Kafka over TLS")
	fs.StringVar(&o.kafka.TLS.CAFile, "kafka-tls-ca", "", "PEM CA bundle for the brokers (default: system roots)")
	fs.StringVar(&o.kafka.TLS.CertFile, "kafka-tls-cert", "", "PEM client certificate (mTLS)")
	fs.StringVar(&o.kafka.TLS.KeyFile, "kafka-tls-key", "", "PEM client key (mTLS)")
	fs.BoolVar(&o.kafka.TLS.InsecureSkipVerify, "kafka-tls-insecure-skip-verify", false, "do not verify the brokers' certificates (testing only)")
	fs.StringVar(&o.kafka.SASL.Mechanism, "kafka-sasl-mechanism", "", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	fs.StringVar(&o.kafka.SASL.User, "kafka-sasl-user", "", "SASL user")
	fs.StringVar(&o.kafka.SASL.Password, "kafka-sasl-password", "", "SASL password (prefer the environment variable)")
	fs.BoolVar(&o.kafka.Transactions.Enabled, "exactly-once", false, "Kafka transactions: each event visible exactly once to consumers reading with isolation.level=read_committed, "+
		"through any single failure (see docs/guarantees.md)")
	fs.StringVar(&o.kafka.Transactions.ID, "exactly-once-transactional-id", "", "transactional.id; relays on one slot must share it (default: outbox-relay-<system identifier>-<slot>)")
	fs.StringVar(&o.kafka.Transactions.OffsetsTopic, "exactly-once-offsets-topic", o.kafka.Transactions.OffsetsTopic, "compacted topic holding the committed positions (created if missing)")
	fs.DurationVar(&o.kafka.Transactions.CommitInterval, "exactly-once-commit-interval", o.kafka.Transactions.CommitInterval, "a Kafka transaction commits at least this often; consumers see events only after it")
	fs.IntVar(&o.kafka.Transactions.CommitBytes, "exactly-once-commit-bytes", o.kafka.Transactions.CommitBytes, "a Kafka transaction commits early once its keys and values reach this size")
	fs.DurationVar(&o.kafka.Transactions.Timeout, "exactly-once-transaction-timeout", o.kafka.Transactions.Timeout, "transaction.timeout.ms: Kafka aborts a transaction left open this long (a relay that died holding one)")
}

// consentFlags are the operator's one-time consents. They are read from the
// command line only: in the environment or a config file they would outlive
// the one decision they were typed for (a deployment restarting with
// --accept-gap accepts every later gap unseen).
var consentFlags = map[string]bool{"accept-gap": true, "yes": true}

// listFlags take comma-separated values; only they accept a YAML list.
var listFlags = map[string]bool{"kafka-brokers": true, "field": true, "id": true}

// parse applies, in rising precedence, the file, the environment and the
// command line. Unknown file keys are errors: a typo must not pass silently.
// So are consent flags anywhere but on the command line.
func parse(fs *flag.FlagSet, o *options, args []string, getenv func(string) string, stderr io.Writer) error {
	o.flags = fs
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
	o.cmdline = set

	if !set["config"] {
		if v := getenv(envName("config")); v != "" {
			o.configFile = v
		}
	}
	file := map[string]fileValue{}
	if o.configFile != "" {
		var err error
		if file, err = readConfigFile(o.configFile); err != nil {
			return err
		}
	}
	errs := checkFileKeys(fs, o.configFile, file)
	fs.VisitAll(func(f *flag.Flag) {
		if consentFlags[f.Name] {
			if _, ok := getenvOK(getenv, envName(f.Name)); ok {
				errs = append(errs, fmt.Errorf("environment variable %s: --%s is a one-time consent, read only from the command line; unset %[1]s and pass --%[2]s on the command line",
					envName(f.Name), f.Name))
			}
			return
		}
		if set[f.Name] || f.Name == "config" {
			return
		}
		v, ok := getenvOK(getenv, envName(f.Name))
		src := "environment variable " + envName(f.Name)
		if !ok {
			var fv fileValue
			fv, ok = file[f.Name]
			v, src = fv.text, o.configFile+" key "+f.Name
		}
		if ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: invalid value %q: %w%s", src, v, err, boolHint(f)))
			}
		}
	})
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if outboxes, ok := file[outboxesKey]; ok {
		return o.applyOutboxes(fs, outboxes)
	}
	return applyPreset(fs, o)
}

// checkFileKeys refuses, in file order, unknown keys, keys that may not
// come from a file and values that are not a single value.
func checkFileKeys(fs *flag.FlagSet, path string, file map[string]fileValue) []error {
	keys := make([]string, 0, len(file))
	for k := range file {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return file[keys[i]].line < file[keys[j]].line })
	var errs []error
	for _, k := range keys {
		v := file[k]
		switch {
		case k == outboxesKey && fs.Lookup("table") != nil:
			continue // read by applyOutboxes
		case fs.Lookup(k) == nil:
			errs = append(errs, fmt.Errorf("%s: line %d: unknown key %q (keys are the flag names of this command)", path, v.line, k))
		case consentFlags[k]:
			errs = append(errs, fmt.Errorf("%s key %s (line %d): --%[2]s is a one-time consent, read only from the command line; remove the key and pass --%[2]s on the command line", path, k, v.line))
		case k == "config":
			errs = append(errs, fmt.Errorf("%s key config (line %d): a config file cannot name another; remove the key", path, v.line))
		case v.err != nil:
			errs = append(errs, fmt.Errorf("%s key %s (line %d): %w", path, k, v.line, v.err))
		}
	}
	return errs
}

// boolHint names the accepted spellings when a boolean flag refuses a
// value (YAML 1.1's yes/no/on/off are not among them).
func boolHint(f *flag.Flag) string {
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return " (write true or false)"
	}
	return ""
}

func getenvOK(getenv func(string) string, k string) (string, bool) {
	v := getenv(k)
	return v, v != ""
}

// envName maps a flag to its variable: pg-url -> OUTBOX_RELAY_PG_URL.
func envName(flagName string) string {
	return "OUTBOX_RELAY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// fileValue is one key of a config file: the value's text, or why it has
// none.
type fileValue struct {
	text string
	line int
	err  error
	node *yaml.Node // outboxes only: the list, read by applyOutboxes
}

// readConfigFile reads a YAML mapping of flag names to values. A value is
// taken as written: the scalar's text after YAML's quoting and escapes,
// never the number, date or boolean YAML would resolve it to, so that
// `slot: 0123` names the slot "0123" (not 83) and `kafka-sasl-password:
// 0x1F` is that password. The flag package then parses the text as it
// parses the command line. A value that is not one scalar (a mapping, a
// list where the flag takes one value, null, !!binary) or that holds a
// line break is an error for its key. A file is one YAML document; an
// empty one (nothing, comments, a lone ---) sets nothing.
func readConfigFile(path string) (map[string]fileValue, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	root, err := configDocument(path, b)
	if root == nil || err != nil {
		return map[string]fileValue{}, err
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config file %s: line %d: want a mapping of flag names to values (like `slot: outbox_relay`), not %s", path, root.Line, kindName(root))
	}
	out := map[string]fileValue{}
	var errs []error
	for i := 0; i+1 < len(root.Content); i += 2 {
		kn, vn := root.Content[i], root.Content[i+1]
		switch {
		case kn.Kind == yaml.ScalarNode && kn.ShortTag() == "!!merge":
			errs = append(errs, fmt.Errorf("config file %s: line %d: merge keys (<<) are not supported: write each key out", path, kn.Line))
			continue
		case kn.Kind != yaml.ScalarNode:
			errs = append(errs, fmt.Errorf("config file %s: line %d: a key must be a flag name, not %s", path, kn.Line, kindName(kn)))
			continue
		}
		k := strings.ReplaceAll(kn.Value, "_", "-")
		if prev, dup := out[k]; dup {
			errs = append(errs, fmt.Errorf("%s key %s: given twice (lines %d and %d); keep one", path, k, prev.line, kn.Line))
			continue
		}
		if k == outboxesKey {
			out[k] = fileValue{line: kn.Line, node: vn}
			continue
		}
		text, err := valueText(k, vn)
		out[k] = fileValue{text: text, line: kn.Line, err: err}
	}
	return out, errors.Join(errs...)
}

// configDocument returns the root node of the file's one YAML document, or
// nil for an empty file. yaml.Unmarshal reads the first document only: a
// second one (after ---) was dropped without a word, its slot with it, and
// the relay created the default slot.
func configDocument(path string, b []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var root *yaml.Node
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return root, nil
		}
		if err != nil {
			return nil, fmt.Errorf("parse config file %s: %w", path, err)
		}
		if len(doc.Content) == 0 || isEmptyDocument(doc.Content[0]) {
			continue
		}
		if root != nil {
			return nil, fmt.Errorf("config file %s: line %d: a second YAML document (after ---), but the relay reads one: merge the documents into one mapping and remove the ---", path, doc.Content[0].Line)
		}
		root = doc.Content[0]
	}
}

// isEmptyDocument reports whether n is a document with nothing in it (a
// lone --- or ...).
func isEmptyDocument(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" && n.Value == "" && n.Style == 0
}

// valueText is the text of a key's value: a scalar as written, or a list
// joined with commas for a flag that takes a list.
func valueText(key string, n *yaml.Node) (string, error) {
	if n.Kind == yaml.SequenceNode && listFlags[key] {
		parts := make([]string, len(n.Content))
		for i, item := range n.Content {
			if item.Kind == yaml.AliasNode && item.Alias != nil {
				item = item.Alias
			}
			if item.Kind != yaml.ScalarNode || item.ShortTag() == "!!null" {
				return "", fmt.Errorf("item %d of the list is not a single value: write one value per item", i+1)
			}
			text, err := plainText(key, item)
			if err != nil {
				return "", fmt.Errorf("item %d of the list %w", i+1, err)
			}
			parts[i] = text
		}
		return strings.Join(parts, ","), nil
	}
	return scalarText(key, n)
}

// scalarText is a scalar's text as written; anything else is refused
// with the way to write what was probably meant.
func scalarText(key string, n *yaml.Node) (string, error) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch {
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" && n.Value == "":
		return "", fmt.Errorf("has no value: write %s: \"\" for an empty value, or remove the key for the default", key)
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null":
		return "", fmt.Errorf("is %s, which YAML reads as null: quote it (%s: \"%[1]s\") if you mean that text, write %[2]s: \"\" for an empty value, or remove the key for the default", n.Value, key)
	case n.Kind == yaml.ScalarNode:
		return plainText(key, n)
	case n.Kind == yaml.SequenceNode:
		return "", fmt.Errorf("is a YAML list, but --%s takes one value: write one value, quoted if it starts with [ (%s: \"[...]\")", key, key)
	default:
		return "", fmt.Errorf("is %s, but --%s takes one value: write one value, quoted if it starts with { (%s: \"{...}\")", kindName(n), key, key)
	}
}

// plainText is a non-null scalar's text, refused where it is not the
// value itself (!!binary is base64 of it) or holds a line break: no flag
// takes one, and a block scalar (| or >) keeps its last line's, so
// `publication: >` named a publication "outbox_relay\n". The value is
// never quoted back: it may be a password.
func plainText(key string, n *yaml.Node) (string, error) {
	switch {
	case n.ShortTag() == "!!binary":
		return "", fmt.Errorf("is a !!binary value, which the relay does not decode: write %s as text, without the tag", key)
	case strings.ContainsAny(n.Value, "\r\n"):
		return "", errors.New("holds a line break, which no flag takes: write the value on the key's line, or end a block scalar with |- or >- to drop its last line break")
	}
	return n.Value, nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a YAML mapping"
	case yaml.SequenceNode:
		return "a YAML list"
	case yaml.AliasNode:
		return "a YAML alias"
	default:
		return "a single value"
	}
}

func printFlags(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage: outbox-relay %s [flags]\n\nFlags (each also OUTBOX_RELAY_<NAME> in the environment or <name> in --config, unless command line only):\n", fs.Name())
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	sort.Strings(names)
	for _, n := range names {
		f := fs.Lookup(n)
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		where := "env " + envName(n)
		if consentFlags[n] {
			where = "command line only"
		}
		fmt.Fprintf(w, "  --%s\n        %s (default %s; %s)\n", n, f.Usage, def, where)
	}
}

// finish fills derived fields and checks what flags alone can check.
func (o *options) finish() error {
	var errs []error
	for _, b := range strings.Split(o.kafkaBroker, ",") {
		if b = strings.TrimSpace(b); b != "" {
			o.kafka.Brokers = append(o.kafka.Brokers, b)
		}
	}
	if o.progressInterval < 0 {
		errs = append(errs, fmt.Errorf("--progress-interval %s: use 0 (no progress lines) or a positive duration such as 1m", o.progressInterval))
	}
	if o.logFormat != "json" && o.logFormat != "console" {
		errs = append(errs, fmt.Errorf("--log-format %q: use json or console", o.logFormat))
	}
	return errors.Join(errs...)
}

// sealKeys loads --encryption-keys; nil without it. A missing or malformed
// file fails the start, naming the line, never a key.
func (o *options) sealKeys() (*seal.Keys, error) {
	if o.encryptionKeys == "" {
		return nil, nil
	}
	k, err := seal.Load(o.encryptionKeys)
	if err != nil {
		return nil, fmt.Errorf("--encryption-keys: %w", err)
	}
	return k, nil
}
