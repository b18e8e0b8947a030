package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/outbox-relay/outbox-relay/route"
)

func TestOutboxesList(t *testing.T) {
	path := writeConfig(t, `
slot: shop
outboxes:
  - table: public.outbox
    topic: "orders.{event_type}"
  - table: billing.outbox
    preset: debezium
    topic: "payments.{type}"
    envelope: json
    field: [tenant:envelope, "trace:header:traceparent"]
    tombstone_on_empty_payload: true
`)
	o, err := parseRun(t, []string{"--config", path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.pg.Table != "public.outbox" || o.pg.Route.Topic != "orders.{event_type}" || o.pg.Route.Columns != route.DefaultColumns() || o.pg.Slot != "shop" {
		t.Errorf("first outbox %q %+v", o.pg.Table, o.pg.Route)
	}
	want, _ := route.Preset("debezium")
	want.Topic, want.Envelope, want.TombstoneOnEmptyPayload = "payments.{type}", route.EnvelopeJSON, true
	want.Fields = []route.Field{{Column: "tenant", Place: route.PlaceEnvelope}, {Column: "trace", Place: route.PlaceHeader, Alias: "traceparent"}}
	if len(o.pg.Outboxes) != 1 || o.pg.Outboxes[0].Table != "billing.outbox" || !reflect.DeepEqual(o.pg.Outboxes[0].Route, want) {
		t.Errorf("outboxes %+v\nwant billing.outbox with %+v", o.pg.Outboxes, want)
	}
	if err := o.pg.Validate(); err != nil && !strings.Contains(err.Error(), "ConnString") {
		t.Errorf("Validate: %v", err)
	}
}

func TestOutboxesListRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		args       []string
		env        map[string]string
		want       []string
	}{
		{name: "routing flag outside", yaml: "outboxes:\n  - table: a.b\n", args: []string{"--topic", "x"}, env: map[string]string{"OUTBOX_RELAY_PRESET": "debezium"},
			want: []string{"lists the outboxes, but --preset, --topic are set outside it"}},
		{name: "not a list", yaml: "outboxes: public.outbox\n", want: []string{"want a list of outboxes"}},
		{name: "empty list", yaml: "outboxes: []\n", want: []string{"want a list of outboxes"}},
		{name: "item not a mapping", yaml: "outboxes:\n  - public.outbox\n", want: []string{"item 1 (line 2): want a mapping"}},
		{name: "unknown key and no table", yaml: "outboxes:\n  - topic: x\n    slot: s\n", want: []string{
			`item 1 (line 2): line 3: unknown key "slot"`, "item 1 (line 2): has no table"}},
		{name: "bad value", yaml: "outboxes:\n  - table: a.b\n    tombstone-on-empty-payload: maybe\n", want: []string{
			"item 1 (line 2) key tombstone-on-empty-payload (line 3)", "(write true or false)"}},
		{name: "bad routing names the key", yaml: "outboxes:\n  - table: a.b\n  - table: c.d\n    field: [x:envelope]\n    envelope: avro\n", want: []string{
			`item 2 (line 3) key field: "x:envelope": envelope placement needs an envelope`, `item 2 (line 3) key envelope: "avro": use none`}},
		{name: "bad preset", yaml: "outboxes:\n  - table: a.b\n    preset: maxwell\n", want: []string{`key preset (line 3): unknown preset "maxwell": use one of debezium`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseRun(t, append([]string{"--config", writeConfig(t, tc.yaml)}, tc.args...), tc.env)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("%v, want it to say %q", err, w)
				}
			}
		})
	}
}
