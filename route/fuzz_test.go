package route

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// The seeds are testdata/fuzz/FuzzTopicTemplate/ plus those added below.
// Run the fuzzer with
//
//	go test ./route -run '^$' -fuzz FuzzTopicTemplate -fuzztime 1m

// renderWith is the reference rendering: every {placeholder} replaced by
// value. It scans the template itself rather than trusting parseTemplate.
func renderWith(tmpl, value string) string {
	var b strings.Builder
	for {
		open := strings.IndexByte(tmpl, '{')
		if open < 0 {
			return b.String() + tmpl
		}
		end := strings.IndexByte(tmpl[open:], '}')
		b.WriteString(tmpl[:open])
		b.WriteString(value)
		tmpl = tmpl[open+end+1:]
	}
}

func FuzzTopicTemplate(f *testing.F) {
	for _, s := range [][2]string{
		{"outbox.event.{aggregate_type}", "order"},
		{"{aggregate_type}.{event_type}", "Order-Created_v1"},
		{"fixed-topic", ""},
		{"events.{tenant}", "acme"},
		{"bad.{aggregate_type}", "has space"},
		{"{aggregate_type}", ".."},
		{"x{", "v"},
		{"{}", "v"},
		{"{a b}", "v"},
		{"{{x}", "v"},
		{"}{id}{", "v"},
		{strings.Repeat("a", 240) + "{id}", strings.Repeat("b", 20)},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, tmpl, value string) {
		segs, err := parseTemplate(tmpl)
		if err != nil {
			if !strings.Contains(err.Error(), "template") {
				t.Fatalf("parseTemplate(%q) error %q does not say it is about the template", tmpl, err)
			}
			return
		}
		cfg := DefaultConfig()
		cfg.Topic = tmpl
		names, err := TemplateColumns(tmpl, cfg.Columns)
		if err != nil {
			t.Fatalf("TemplateColumns(%q) = %v after parseTemplate accepted it", tmpl, err)
		}
		var placeholders int
		for _, s := range segs {
			if s.name != "" {
				placeholders++
			}
		}
		if len(names) != placeholders {
			t.Fatalf("TemplateColumns(%q) = %q, want %d names", tmpl, names, placeholders)
		}

		// Render through a Binding: the default columns plus each
		// placeholder's column, every value set to value.
		cols := slices.Clone(outboxColumns)
		for _, n := range names {
			if !slices.ContainsFunc(cols, func(c Column) bool { return c.Name == n }) {
				cols = append(cols, Column{Name: n, TypeOID: 25})
			}
		}
		m, err := New(cfg)
		if err != nil {
			t.Fatalf("New with template %q: %v", tmpl, err)
		}
		b, err := m.Bind(`"public"."outbox"`, cols)
		if err != nil {
			t.Fatalf("bind: %v", err)
		}
		vals := make([]Value, len(cols))
		for i := range vals {
			vals[i] = Value{Kind: Text, Data: []byte(value)}
		}
		ev, err := b.Event(vals, Meta{LSN: 2})
		want := renderWith(tmpl, value)
		if err != nil {
			var ue *UnmappableError
			if !errors.As(err, &ue) {
				t.Fatalf("template %q value %q: error %T %v, want *UnmappableError", tmpl, value, err, err)
			}
			if placeholders > 0 && ValidTopic(want) == nil {
				t.Fatalf("template %q value %q: refused %q, a valid topic: %v", tmpl, value, want, err)
			}
			return
		}
		if ev.Topic != want {
			t.Fatalf("template %q value %q rendered %q, want %q", tmpl, value, ev.Topic, want)
		}
		if placeholders > 0 {
			if err := ValidTopic(ev.Topic); err != nil {
				t.Fatalf("template %q value %q rendered %q, which Kafka refuses: %v", tmpl, value, ev.Topic, err)
			}
		}
	})
}
