package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/route"
)

// --preset debezium fills the routing flags the user did not set, from any
// source; what the user set wins.
func TestPresetDebeziumExplicitFlagsWin(t *testing.T) {
	o, err := parseRun(t, []string{"--preset", "debezium"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := route.Preset("debezium")
	if !reflect.DeepEqual(o.pg.Route, want) {
		t.Errorf("route config\n%+v\nwant the preset\n%+v", o.pg.Route, want)
	}

	path := writeConfig(t, "preset: debezium\nkey-column: id\n")
	o, err = parseRun(t, []string{"--config", path, "--payload-column", "body", "--timestamp-column", "created_at"},
		map[string]string{"OUTBOX_RELAY_TOPIC": "events.{aggregate_type}"})
	if err != nil {
		t.Fatal(err)
	}
	rt := o.pg.Route
	for _, c := range []struct{ name, got, want string }{
		{"key-column (file)", rt.KeyColumn, "id"},
		{"payload-column (flag)", rt.Columns.Payload, "body"},
		{"topic (environment)", rt.Topic, "events.{aggregate_type}"},
		{"timestamp-column (flag)", rt.TimestampColumn, "created_at"},
		{"aggregate-id-column (preset)", rt.Columns.AggregateID, "aggregateid"},
		{"event-type-column (preset)", rt.Columns.EventType, "type"},
		{"headers-column (preset)", rt.Columns.Headers, ""},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if rt.TimestampOptional {
		t.Error("an explicit --timestamp-column is optional; a missing column must fail at start")
	}
}

func TestPresetRefusesEmptyAndUnknown(t *testing.T) {
	for _, args := range [][]string{{"--preset", "maxwell"}, {"--preset="}, {"--preset"}} {
		var stderr bytes.Buffer
		o, fs := runFlags()
		err := parse(fs, o, args, func(string) string { return "" }, &stderr)
		if err == nil || !strings.Contains(stderr.String()+err.Error(), "debezium") {
			t.Errorf("%v: %v, stderr %q; want an error listing the presets", args, err, stderr.String())
		}
	}
	for _, src := range []struct {
		env  map[string]string
		file string
	}{{env: map[string]string{"OUTBOX_RELAY_PRESET": "Debezium"}}, {file: "preset: \"\"\n"}} {
		var args []string
		if src.file != "" {
			args = []string{"--config", writeConfig(t, src.file)}
		}
		if _, err := parseRun(t, args, src.env); err == nil || !strings.Contains(err.Error(), "use one of debezium") {
			t.Errorf("%+v: %v, want an error listing the presets", src, err)
		}
	}
}

func TestFieldFlag(t *testing.T) {
	want := []route.Field{{Column: "tenant", Place: route.PlaceHeader}, {Column: "trace", Place: route.PlaceHeader, Alias: "traceparent"},
		{Column: "v", Place: route.PlaceEnvelope, Alias: "dataschema"}}
	o, err := parseRun(t, []string{"--field", "tenant:header", "--field", "trace:header:traceparent", "--field", "v:envelope:dataschema"}, nil)
	if err != nil || !reflect.DeepEqual(o.pg.Route.Fields, want) {
		t.Errorf("flags: %+v, %v; want %+v", o.pg.Route.Fields, err, want)
	}
	o, err = parseRun(t, nil, map[string]string{"OUTBOX_RELAY_FIELD": "tenant:header, trace:header:traceparent,v:envelope:dataschema"})
	if err != nil || !reflect.DeepEqual(o.pg.Route.Fields, want) {
		t.Errorf("environment: %+v, %v; want %+v", o.pg.Route.Fields, err, want)
	}
	path := writeConfig(t, "field: [tenant:header, \"trace:header:traceparent\", v:envelope:dataschema]\n")
	o, err = parseRun(t, []string{"--config", path}, nil)
	if err != nil || !reflect.DeepEqual(o.pg.Route.Fields, want) {
		t.Errorf("file: %+v, %v; want %+v", o.pg.Route.Fields, err, want)
	}
	if _, err := parseRun(t, nil, map[string]string{"OUTBOX_RELAY_FIELD": "tenant:partition"}); err == nil ||
		!strings.Contains(err.Error(), `placement "partition" is not header or envelope`) {
		t.Errorf("bad placement: %v", err)
	}
}

// Field and envelope problems found by route.Config.Validate name the flag.
func TestDebeziumFlagErrorsNameTheFlags(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--field", "tenant:envelope"}, []string{`--field (OUTBOX_RELAY_FIELD): "tenant:envelope": envelope placement needs an envelope`}},
		{[]string{"--envelope", "avro"}, []string{`--envelope (OUTBOX_RELAY_ENVELOPE): "avro": use none, cloudevents or json`}},
		{[]string{"--envelope", "cloudevents", "--cloudevents-source", "%zz"}, []string{"--cloudevents-source (OUTBOX_RELAY_CLOUDEVENTS_SOURCE)"}},
	} {
		args := append([]string{"run", "--pg-url", "postgres://postgres@127.0.0.1:1/none", "--kafka-brokers", "127.0.0.1:1", "--metrics-addr", ""}, c.args...)
		err := run(ctx, args, func(string) string { return "" }, io.Discard, io.Discard)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %v, want it to say %s", c.args, err, w)
			}
		}
	}
}

// The before/after example of docs/migrating-from-debezium.md parses to
// the routing it claims.
func TestMigrationExampleParses(t *testing.T) {
	doc, err := os.ReadFile("../../docs/migrating-from-debezium.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("no yaml block in docs/migrating-from-debezium.md")
	}
	o, err := parseRun(t, []string{"--config", writeConfig(t, string(m[1]))}, nil)
	if err != nil {
		t.Fatalf("the example relay.yaml: %v", err)
	}
	rt := o.pg.Route
	wantFields := []route.Field{{Column: "tenant", Place: route.PlaceHeader}, {Column: "traceparent", Place: route.PlaceHeader},
		{Column: "type", Place: route.PlaceHeader, Alias: "eventType"}}
	if o.pg.Slot != "debezium" || o.pg.Publication != "dbz_publication" || rt.Topic != "events.{aggregatetype}" ||
		rt.Columns.AggregateID != "aggregateid" || rt.TimestampColumn != "created_at" || !rt.TombstoneOnEmptyPayload ||
		!reflect.DeepEqual(rt.Fields, wantFields) {
		t.Errorf("parsed %+v slot %q publication %q", rt, o.pg.Slot, o.pg.Publication)
	}
	if err := o.pg.Route.Validate(); err != nil {
		t.Errorf("the example's routing does not validate: %v", err)
	}
}
