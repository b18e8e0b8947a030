package main

import (
	"errors"
	"flag"
	"reflect"
	"strings"

	outboxrelay "github.com/outbox-relay/outbox-relay"
)

// nameFields makes the library's *outboxrelay.FieldError values in err name
// the flags the user sets them with. The packages know only their Config
// fields; which flag fills a field is read from fs by address (each flag
// holds a pointer to the field it sets), so the mapping cannot drift from
// the flags (o.flags). Wrapping formats messages when it wraps, so the errors are
// joined anew; an err holding anything else comes back as it is.
func nameFields(err error, o *options) error {
	fes := outboxrelay.FieldErrors(err)
	if len(fes) == 0 || len(fes) != countLeaves(err) {
		return err
	}
	byAddr := map[uintptr]string{}
	o.flags.VisitAll(func(f *flag.Flag) {
		if v := reflect.ValueOf(f.Value); v.Kind() == reflect.Pointer {
			byAddr[v.Pointer()] = f.Name
		}
	})
	flags := map[string]string{"sink.Brokers": "kafka-brokers"} // split from one comma-separated flag
	for pkg, cfg := range map[string]any{"replication": &o.pg, "route": &o.pg.Route, "sink": &o.kafka, "relay": &o.relay} {
		leafFields(reflect.ValueOf(cfg).Elem(), pkg, func(path string, addr uintptr) {
			if name, ok := byAddr[addr]; ok {
				flags[path] = name
			}
		})
	}
	named := make([]error, len(fes))
	for i, fe := range fes {
		c := *fe
		if name, ok := flags[fe.Pkg+"."+fe.Field]; ok {
			c.SetBy = "--" + name + " (" + envName(name) + ")"
		} else if fe.Pkg == "replication" && strings.HasPrefix(fe.Field, "Outboxes[") {
			c.SetBy = o.configFile + " key " + outboxesKey + " " + fe.Field
		}
		named[i] = &c
	}
	return errors.Join(named...)
}

// countLeaves counts the errors in err's tree that wrap nothing.
func countLeaves(err error) int {
	switch e := err.(type) {
	case nil:
		return 0
	case interface{ Unwrap() []error }:
		n := 0
		for _, c := range e.Unwrap() {
			n += countLeaves(c)
		}
		return n
	case interface{ Unwrap() error }:
		if inner := e.Unwrap(); inner != nil {
			return countLeaves(inner)
		}
	}
	return 1
}

// leafFields calls visit with the path and address of every non-struct
// field of the struct v, depth first.
func leafFields(v reflect.Value, prefix string, visit func(path string, addr uintptr)) {
	for i := range v.NumField() {
		f, path := v.Field(i), prefix+"."+v.Type().Field(i).Name
		if f.Kind() == reflect.Struct {
			leafFields(f, path, visit)
			continue
		}
		visit(path, f.Addr().Pointer())
	}
}
