package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/replication"
)

// outboxesKey is the config file key that lists several outboxes, each a
// mapping of routing flag names (registerRouting) to values.
const outboxesKey = "outboxes"

// applyOutboxes makes the file's outboxes list the relay's outboxes: the
// first is Table and Route, the rest Outboxes. The top-level routing flags
// must then be unset: set, they would say which outbox they mean no more
// than they would be used.
func (o *options) applyOutboxes(fs *flag.FlagSet, list fileValue) error {
	where := fmt.Sprintf("%s key %s (line %d)", o.configFile, outboxesKey, list.line)
	if list.node.Kind != yaml.SequenceNode || len(list.node.Content) == 0 {
		return fmt.Errorf("%s: want a list of outboxes, each a mapping like `- {table: public.orders_outbox, topic: \"orders.{event_type}\"}`", where)
	}
	routing := routingFlags()
	var set []string
	fs.Visit(func(f *flag.Flag) {
		if routing[f.Name] {
			set = append(set, "--"+f.Name)
		}
	})
	if len(set) > 0 {
		sort.Strings(set)
		return fmt.Errorf("%s lists the outboxes, but %s %s set outside it (command line, environment or file): set them in the items of %s",
			where, strings.Join(set, ", "), map[bool]string{true: "is", false: "are"}[len(set) == 1], outboxesKey)
	}
	var outs []replication.Outbox
	var errs []error
	for i, item := range list.node.Content {
		out, err := parseOutbox(fmt.Sprintf("%s: item %d (line %d)", where, i+1, item.Line), item)
		errs = append(errs, err)
		outs = append(outs, out)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	o.pg.Table, o.pg.Route, o.pg.Outboxes = outs[0].Table, outs[0].Route, outs[1:]
	return nil
}

// routingFlags are the names registerRouting adds.
func routingFlags() map[string]bool {
	fs := flag.NewFlagSet("routing", flag.ContinueOnError)
	newOptions().registerRouting(fs)
	names := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { names[f.Name] = true })
	return names
}

// parseOutbox reads one item of the list: its keys are routing flags,
// taken as written like every file value, then its preset; its routing is
// validated here so a problem names the item and the key.
func parseOutbox(where string, node *yaml.Node) (replication.Outbox, error) {
	if node.Kind != yaml.MappingNode {
		return replication.Outbox{}, fmt.Errorf("%s: want a mapping of routing flag names to values, not %s", where, kindName(node))
	}
	item := newOptions()
	fs := flag.NewFlagSet("outbox", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	item.registerRouting(fs)
	var errs []error
	for i := 0; i+1 < len(node.Content); i += 2 {
		kn, vn := node.Content[i], node.Content[i+1]
		k := strings.ReplaceAll(kn.Value, "_", "-")
		f := fs.Lookup(k)
		if kn.Kind != yaml.ScalarNode || f == nil {
			errs = append(errs, fmt.Errorf("%s: line %d: unknown key %q (an outbox takes the routing flags: table, topic, key-column, partition-by, the column flags, field, ...)", where, kn.Line, kn.Value))
			continue
		}
		text, err := valueText(k, vn)
		if err == nil {
			err = fs.Set(k, text)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s key %s (line %d): %w%s", where, k, kn.Line, err, boolHint(f)))
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["table"] || item.pg.Table == "" {
		errs = append(errs, fmt.Errorf("%s: has no table: every outbox names its table (table: schema.name)", where))
	}
	if err := applyPreset(fs, item); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", where, err))
	}
	if len(errs) == 0 {
		errs = append(errs, outboxFieldErrors(where, fs, item, item.pg.Route.Validate())...)
	}
	return replication.Outbox{Table: item.pg.Table, Route: item.pg.Route}, errors.Join(errs...)
}

// outboxFieldErrors names the item's key for each of route's FieldErrors.
func outboxFieldErrors(where string, fs *flag.FlagSet, o *options, err error) []error {
	byAddr := map[uintptr]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if v := reflect.ValueOf(f.Value); v.Kind() == reflect.Pointer {
			byAddr[v.Pointer()] = f.Name
		}
	})
	keys := map[string]string{}
	leafFields(reflect.ValueOf(&o.pg.Route).Elem(), "route", func(path string, addr uintptr) {
		if name, ok := byAddr[addr]; ok {
			keys[path] = name
		}
	})
	var errs []error
	for _, fe := range outboxrelay.FieldErrors(err) {
		key, ok := keys[fe.Pkg+"."+fe.Field]
		if !ok {
			key = fe.Field
		}
		errs = append(errs, fmt.Errorf("%s key %s: %s", where, key, fe.Problem))
	}
	return errs
}
