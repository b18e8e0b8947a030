package route

import (
	"fmt"
	"slices"
	"strings"
)

// presets are named starting points for Config. A preset sets only what
// its source system fixes by default; everything else keeps the relay's
// defaults.
var presets = map[string]func(*Config){
	// debezium is the Outbox Event Router's defaults: columns id,
	// aggregatetype, aggregateid, type, payload and an optional
	// timestamp; key aggregateid; topic outbox.event.<aggregatetype>;
	// header id. It has no headers column.
	"debezium": func(c *Config) {
		c.Columns = Columns{ID: "id", AggregateType: "aggregatetype", AggregateID: "aggregateid", EventType: "type", Payload: "payload"}
		c.Topic = "outbox.event.{aggregate_type}"
		c.KeyColumn = "aggregate_id"
		c.PartitionBy = "aggregate_id"
		c.TimestampColumn, c.TimestampOptional = "timestamp", true
	},
}

// PresetNames lists the presets, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Preset returns DefaultConfig with the named preset applied. An empty or
// unknown name is an error listing the presets.
func Preset(name string) (Config, error) {
	apply, ok := presets[name]
	if !ok {
		what := fmt.Sprintf("unknown preset %q", name)
		if name == "" {
			what = "no preset named"
		}
		return Config{}, fmt.Errorf("%s: use one of %s", what, strings.Join(PresetNames(), ", "))
	}
	c := DefaultConfig()
	apply(&c)
	return c, nil
}
