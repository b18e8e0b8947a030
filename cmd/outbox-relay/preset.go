package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/outbox-relay/outbox-relay/route"
)

// presetFlag is --preset: a name route.Preset knows, checked when set so
// an unknown or empty one is refused with the list.
type presetFlag struct{ name *string }

func (p presetFlag) String() string {
	if p.name == nil {
		return ""
	}
	return *p.name
}

func (p presetFlag) Set(v string) error {
	if _, err := route.Preset(v); err != nil {
		return err
	}
	*p.name = v
	return nil
}

// applyPreset gives every routing flag the user did not set (on the command
// line, in the environment or in the file) the preset's value: explicit
// flags win over the preset, the preset over the defaults.
func applyPreset(fs *flag.FlagSet, o *options) error {
	if o.preset == "" {
		return nil
	}
	p, err := route.Preset(o.preset)
	if err != nil {
		return fmt.Errorf("--preset: %w", err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	values := []struct{ flag, value string }{
		{"id-column", p.Columns.ID}, {"aggregate-type-column", p.Columns.AggregateType},
		{"aggregate-id-column", p.Columns.AggregateID}, {"event-type-column", p.Columns.EventType},
		{"payload-column", p.Columns.Payload}, {"headers-column", p.Columns.Headers},
		{"topic", p.Topic}, {"key-column", p.KeyColumn}, {"partition-by", p.PartitionBy},
		{"timestamp-column", p.TimestampColumn},
	}
	var errs []error
	for _, v := range values {
		if set[v.flag] || fs.Lookup(v.flag) == nil {
			continue
		}
		if err := fs.Set(v.flag, v.value); err != nil {
			errs = append(errs, fmt.Errorf("--preset %s: --%s: %w", o.preset, v.flag, err))
		}
	}
	if !set["timestamp-column"] {
		o.pg.Route.TimestampOptional = p.TimestampOptional
	}
	return errors.Join(errs...)
}

// fieldsFlag is --field, repeatable; one value may hold several fields
// separated by commas (the environment variable, a YAML list).
type fieldsFlag []route.Field

func (f *fieldsFlag) String() string {
	if f == nil {
		return ""
	}
	parts := make([]string, len(*f))
	for i, fd := range *f {
		parts[i] = fd.String()
	}
	return strings.Join(parts, ",")
}

// Set adds the comma-separated fields of v; an empty v (a config file's
// `field: ""` or `[]`, as the Helm chart renders it) places none.
func (f *fieldsFlag) Set(v string) error {
	if strings.TrimSpace(v) == "" {
		return nil
	}
	for _, spec := range strings.Split(v, ",") {
		fd, err := route.ParseField(strings.TrimSpace(spec))
		if err != nil {
			return err
		}
		*f = append(*f, fd)
	}
	return nil
}
