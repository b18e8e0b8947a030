package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// parseRun parses args and env exactly as `outbox-relay run` does.
func parseRun(t *testing.T, args []string, env map[string]string) (*options, error) {
	t.Helper()
	o, fs := runFlags()
	return o, parse(fs, o, args, func(k string) string { return env[k] }, io.Discard)
}

// writeConfig writes a YAML config file and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The config file was decoded into Go values and printed back, so YAML's
// resolution rewrote values: `slot: 0123` became slot 83 (a new slot; the
// real one kept its events and WAL), 1_000 became 1000, 0x1F 31, 1.10 1.1,
// and dates were re-formatted.
func TestConfigFileValuesAreTakenAsWritten(t *testing.T) {
	path := writeConfig(t, `
slot: 0123
kafka-sasl-password: 0x1F
topic: 1_000
kafka-client-id: 1.10
publication: 2024-01-02
dead-letter-topic: 2001-12-14t21:59:43.10-05:00
kafka-sasl-user: 1e3
key-column: 0o17
id-column: +12
payload-column: .inf
aggregate_type_column: 0777
aggregate-id-column: yes
event-type-column: 'null'
headers-column: ""
kafka-tls-ca: "0123"
kafka-tls-cert: |-
  0x10
kafka-brokers: [kafka1:9092, 010:9092]
kafka-tls: true
create-missing: false
status-interval: 250ms
`)
	o, err := parseRun(t, []string{"--config", path}, nil)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	for _, c := range []struct{ name, got, want string }{
		{"slot", o.pg.Slot, "0123"},
		{"kafka-sasl-password", o.kafka.SASL.Password, "0x1F"},
		{"topic", o.pg.Route.Topic, "1_000"},
		{"kafka-client-id", o.kafka.ClientID, "1.10"},
		{"publication", o.pg.Publication, "2024-01-02"},
		{"dead-letter-topic", o.relay.DeadLetterTopic, "2001-12-14t21:59:43.10-05:00"},
		{"kafka-sasl-user", o.kafka.SASL.User, "1e3"},
		{"key-column", o.pg.Route.KeyColumn, "0o17"},
		{"id-column", o.pg.Route.Columns.ID, "+12"},
		{"payload-column", o.pg.Route.Columns.Payload, ".inf"},
		{"aggregate-type-column", o.pg.Route.Columns.AggregateType, "0777"},
		{"aggregate-id-column", o.pg.Route.Columns.AggregateID, "yes"},
		{"event-type-column", o.pg.Route.Columns.EventType, "null"},
		{"headers-column", o.pg.Route.Columns.Headers, ""},
		{"kafka-tls-ca", o.kafka.TLS.CAFile, "0123"},
		{"kafka-tls-cert", o.kafka.TLS.CertFile, "0x10"},
		{"kafka-brokers", o.kafkaBroker, "kafka1:9092,010:9092"},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q as written in the file", c.name, c.got, c.want)
		}
	}
	if !o.kafka.TLS.Enabled || o.pg.Create || o.pg.StatusInterval != 250*time.Millisecond {
		t.Errorf("kafka-tls %v, create-missing %v, status-interval %v: want true, false, 250ms", o.kafka.TLS.Enabled, o.pg.Create, o.pg.StatusInterval)
	}

	// The environment still wins over the file, and the command line over both.
	o, err = parseRun(t, []string{"--config", path, "--topic", "cli"}, map[string]string{"OUTBOX_RELAY_SLOT": "from_env", "OUTBOX_RELAY_TOPIC": "env"})
	if err != nil {
		t.Fatal(err)
	}
	if o.pg.Slot != "from_env" || o.pg.Route.Topic != "cli" || o.kafka.SASL.Password != "0x1F" {
		t.Errorf("precedence: slot %q topic %q password %q, want from_env, cli, 0x1F", o.pg.Slot, o.pg.Route.Topic, o.kafka.SASL.Password)
	}
}

// A value that is not one scalar used to be printed with fmt.Sprint:
// `topic: {aggregate_type}` (a YAML mapping) became the topic
// "map[aggregate_type:<nil>]", a null became "", and yes/no reached a bool
// flag as whatever YAML made of them.
func TestConfigFileRefusesWhatIsNotAValue(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"mapping", "slot:\n  name: x\n", []string{"key slot (line 1)", "YAML mapping", "--slot takes one value"}},
		{"flow mapping", "topic: {aggregate_type}\n", []string{"key topic", "YAML mapping", `topic: "{...}"`}},
		{"list", "slot: [a, b]\n", []string{"key slot", "YAML list"}},
		{"list item", "kafka-brokers: [a:9092, {b: 1}]\n", []string{"key kafka-brokers", "item 2"}},
		{"null", "pg-url: ~\n", []string{"key pg-url", "null", `pg-url: ""`}},
		{"empty", "slot:\n", []string{"key slot", "has no value", `slot: ""`}},
		{"YAML 1.1 boolean", "kafka-tls: yes\n", []string{"key kafka-tls", `"yes"`, "true or false"}},
		{"unknown key", "slots: x\n", []string{`unknown key "slots"`}},
		{"duplicate", "slot: a\nslot: b\n", []string{"key slot", "twice", "lines 1 and 2"}},
		{"duplicate spelled apart", "key-column: a\nkey_column: b\n", []string{"key key-column", "twice"}},
		{"nested config", "config: other.yaml\n", []string{"key config", "cannot name another"}},
		{"not a mapping", "- slot\n", []string{"want a mapping"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseRun(t, []string{"--config", writeConfig(t, c.yaml)}, nil)
			if err == nil {
				t.Fatalf("%q was accepted", c.yaml)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
}

// --accept-gap was honoured from OUTBOX_RELAY_ACCEPT_GAP and the config
// file (a deployment that kept it accepted every later gap unseen) while
// --yes was silently ignored there: both consents now come from the command
// line only, and anywhere else they are an error naming that fix.
func TestConsentFlagsAreCommandLineOnly(t *testing.T) {
	t.Run("accept-gap on the command line", func(t *testing.T) {
		o, err := parseRun(t, []string{"--accept-gap"}, nil)
		if err != nil || !o.acceptGap {
			t.Fatalf("--accept-gap: %v (accept %v)", err, o.acceptGap)
		}
	})
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"environment", nil, map[string]string{"OUTBOX_RELAY_ACCEPT_GAP": "true"}},
		{"environment and command line", []string{"--accept-gap"}, map[string]string{"OUTBOX_RELAY_ACCEPT_GAP": "1"}},
		{"config file", []string{"--config", writeConfig(t, "accept-gap: true\n")}, nil},
	} {
		t.Run("accept-gap from the "+c.name, func(t *testing.T) {
			o, err := parseRun(t, c.args, c.env)
			if err == nil || !strings.Contains(err.Error(), "pass --accept-gap on the command line") {
				t.Fatalf("parse returned %v (accept %v), want an error naming the fix", err, o.acceptGap)
			}
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Nothing listens on port 1: a command that got past its flags fails to
	// connect instead.
	const url = "postgres://postgres@127.0.0.1:1/none?connect_timeout=5"
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"environment", []string{"slot", "drop", "--pg-url", url}, map[string]string{"OUTBOX_RELAY_YES": "true"}},
		{"config file", []string{"slot", "advance", "--to", "0/1", "--pg-url", url, "--config", writeConfig(t, "yes: true\n")}, nil},
	} {
		t.Run("yes from the "+c.name, func(t *testing.T) {
			err := run(ctx, c.args, func(k string) string { return c.env[k] }, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "pass --yes on the command line") || errors.Is(err, errNeedYes) {
				t.Fatalf("%v returned %v, want an error naming the fix", c.args, err)
			}
		})
	}
}

// A config file is one YAML document: yaml.Unmarshal read the first one
// only, so a second document (after ---) was dropped without a word, its
// slot with it, and the relay created the default slot; and a file holding
// only --- was refused as "not a single value" instead of read as empty.
func TestConfigFileIsOneDocument(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		want       []string // error parts; nil: accepted
		slot       string
	}{
		{"second document", "slot: first\n---\nslot: second\npublication: p2\n", []string{"line 3", "second YAML document", "merge the documents"}, ""},
		{"comment, then two documents", "# relay settings\n---\nslot: real\n---\nslot: other\n", []string{"line 5", "second YAML document"}, ""},
		{"only a document marker", "---\n", nil, defaultSlot()},
		{"marker and comment", "---\n# nothing yet\n", nil, defaultSlot()},
		{"marker, then the mapping", "---\nslot: a\n", nil, "a"},
		{"a trailing empty document", "slot: a\n---\n", nil, "a"},
		{"document end marker", "slot: a\n...\n", nil, "a"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := parseRun(t, []string{"--config", writeConfig(t, c.yaml)}, nil)
			if c.want == nil {
				if err != nil || o.pg.Slot != c.slot {
					t.Fatalf("%q: slot %q, err %v; want slot %q and no error", c.yaml, o.pg.Slot, err, c.slot)
				}
				return
			}
			if err == nil {
				t.Fatalf("%q was accepted (slot %q, publication %q)", c.yaml, o.pg.Slot, o.pg.Publication)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
}

func defaultSlot() string { return newOptions().pg.Slot }

// Values YAML does not hand over as written text were taken anyway: a
// merge key (<<) was refused as the unknown key "<<", a !!binary value was
// taken as its base64 text (a password "c2VjcmV0"), and a block scalar kept
// its last line break, so `publication: >` made the relay create a
// publication named "outbox_relay\n". Each is refused, naming the key and
// the fix, and never quoting the value back (it may be a password).
func TestConfigFileRefusesValuesNotAsWritten(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		want       []string
	}{
		{"merge key", "base: &b\n  slot: s1\n<<: *b\n", []string{"line 3", "merge keys (<<) are not supported", "write each key out"}},
		{"merge key only", "<<: {slot: merged}\n", []string{"line 1", "merge keys (<<)"}},
		{"binary", "kafka-sasl-password: !!binary c2VjcmV0\n", []string{"key kafka-sasl-password", "!!binary", "as text"}},
		{"binary list item", "kafka-brokers: [a:9092, !!binary YjoxCg==]\n", []string{"key kafka-brokers", "item 2", "!!binary"}},
		{"folded block", "publication: >\n  outbox_relay\n", []string{"key publication", "line break", ">-"}},
		{"literal block", "kafka-sasl-password: |\n  s3cret\n", []string{"key kafka-sasl-password", "line break", "|-"}},
		{"two lines", "slot: |-\n  a\n  b\n", []string{"key slot", "line break"}},
		{"escaped line break", "topic: \"events\\r\"\n", []string{"key topic", "line break"}},
		{"list item line break", "kafka-brokers:\n  - a:9092\n  - >\n    b:9092\n", []string{"key kafka-brokers", "item 2", "line break"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := parseRun(t, []string{"--config", writeConfig(t, c.yaml)}, nil)
			if err == nil {
				t.Fatalf("%q was accepted: publication %q, password %q, brokers %q", c.yaml, o.pg.Publication, o.kafka.SASL.Password, o.kafkaBroker)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			for _, secret := range []string{"c2VjcmV0", "s3cret"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error quotes the value %q: %v", secret, err)
				}
			}
		})
	}
	// Block scalars that strip their line break still work.
	o, err := parseRun(t, []string{"--config", writeConfig(t, "publication: >-\n  outbox_relay\nslot: |-\n  s1\n")}, nil)
	if err != nil || o.pg.Publication != "outbox_relay" || o.pg.Slot != "s1" {
		t.Errorf("publication %q, slot %q, err %v; want outbox_relay, s1", o.pg.Publication, o.pg.Slot, err)
	}
}

// --kafka-topic-wait is read like every flag (command line, environment,
// config file); 0 is allowed (a missing topic is undeliverable at once)
// and a negative wait is refused with the flag's name.
func TestKafkaTopicWait(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
		want time.Duration
	}{
		{"default", nil, nil, time.Minute},
		{"command line", []string{"--kafka-topic-wait", "2m"}, nil, 2 * time.Minute},
		{"environment", nil, map[string]string{"OUTBOX_RELAY_KAFKA_TOPIC_WAIT": "90s"}, 90 * time.Second},
		{"config file", []string{"--config", writeConfig(t, "kafka-topic-wait: 0s\n")}, nil, 0},
	} {
		o, err := parseRun(t, c.args, c.env)
		if err != nil || o.kafka.TopicWait != c.want {
			t.Errorf("%s: topic wait %s (%v), want %s", c.name, o.kafka.TopicWait, err, c.want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := run(ctx, []string{"run", "--pg-url", "postgres://postgres@127.0.0.1:1/none", "--kafka-brokers", "127.0.0.1:1",
		"--metrics-addr", "", "--kafka-topic-wait", "-1s"}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--kafka-topic-wait") {
		t.Fatalf("a negative --kafka-topic-wait: %v, want an error naming the flag", err)
	}
}

// The packages name their Config fields in validation errors; the command
// must show the flags the user typed instead, every one of them at once.
func TestConfigErrorsNameTheFlags(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"--kafka-compression", "bogus", "--kafka-sasl-mechanism", "PLAIN", "--kafka-retry-max", "-1"},
			[]string{"--kafka-compression (OUTBOX_RELAY_KAFKA_COMPRESSION): \"bogus\"", "--kafka-sasl-user", "--kafka-retry-max"}},
		{[]string{"--kafka-tls", "--kafka-tls-ca", "/nonexistent/ca.pem"}, []string{"--kafka-tls-ca"}},
		{[]string{"--max-in-flight", "0", "--on-undeliverable", "skip", "--backoff-max", "1ms"},
			[]string{"--max-in-flight (OUTBOX_RELAY_MAX_IN_FLIGHT): 0", "--on-undeliverable", "--backoff-max"}},
		{[]string{"--on-undeliverable", "dead-letter", "--dead-letter-topic", "bad topic"}, []string{"--dead-letter-topic"}},
		{[]string{"--topic", "x.{aggregate_type", "--id-column", "", "--slot", "Bad-Slot", "--status-interval", "0s"},
			[]string{"--topic (OUTBOX_RELAY_TOPIC): topic template", "--id-column", "--slot", "--status-interval"}},
	}
	for _, c := range cases {
		args := append([]string{"run", "--pg-url", "postgres://postgres@127.0.0.1:1/none", "--kafka-brokers", "127.0.0.1:1", "--metrics-addr", ""}, c.args...)
		err := run(ctx, args, func(string) string { return "" }, io.Discard, io.Discard)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %v, want it to name %s", c.args, err, w)
			}
		}
		if err != nil && strings.Contains(err.Error(), ".Config.") {
			t.Errorf("%v: %v names a Go field, not a flag", c.args, err)
		}
	}
}

// Pins the settings only sarama's own Validate refuses: they came back as
// "kafka producer config: kafka: invalid configuration
// (Producer.MaxMessageBytes must be > 0)", naming sarama's field, not the
// flag the user typed, and only once every FieldError was fixed (one
// round of fixes per problem instead of all at once).
func TestSaramaConfigErrorsNameTheFlags(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"--kafka-max-message-bytes", "0"}, []string{"--kafka-max-message-bytes"}},
		{[]string{"--kafka-timeout", "0s"}, []string{"--kafka-timeout"}},
		{[]string{"--kafka-linger", "-1s"}, []string{"--kafka-linger"}},
		{[]string{"--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-user", "u"}, []string{"--kafka-sasl-password"}},
		{[]string{"--kafka-max-message-bytes", "0", "--kafka-retry-max", "-1"}, []string{"--kafka-max-message-bytes", "--kafka-retry-max"}},
	}
	for _, c := range cases {
		args := append([]string{"run", "--pg-url", "postgres://postgres@127.0.0.1:1/none", "--kafka-brokers", "127.0.0.1:1", "--metrics-addr", ""}, c.args...)
		err := run(ctx, args, func(string) string { return "" }, io.Discard, io.Discard)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %v, want it to name %s", c.args, err, w)
			}
		}
	}
}
