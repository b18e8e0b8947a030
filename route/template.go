package route

import (
	"fmt"
	"strings"
)

// segment is a literal or, when name is set, a placeholder.
type segment struct {
	literal string
	name    string // as written in the template
}

func parseTemplate(tmpl string) ([]segment, error) {
	var segs []segment
	rest := tmpl
	for rest != "" {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			segs = append(segs, segment{literal: rest})
			break
		}
		if open > 0 {
			segs = append(segs, segment{literal: rest[:open]})
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("topic template %q: unclosed '{'", tmpl)
		}
		name := rest[open+1 : open+end]
		if name == "" || strings.ContainsAny(name, "{ ") {
			return nil, fmt.Errorf("topic template %q: bad placeholder {%s}; write {column_name}", tmpl, name)
		}
		segs = append(segs, segment{name: name})
		rest = rest[open+end+1:]
	}
	if len(segs) == 0 {
		return nil, fmt.Errorf("topic template is empty")
	}
	return segs, nil
}

// TemplateColumns lists the placeholders of a topic template, resolved
// through cols, so preflight can check they exist.
func TemplateColumns(tmpl string, cols Columns) ([]string, error) {
	segs, err := parseTemplate(tmpl)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range segs {
		if s.name != "" {
			out = append(out, cols.Resolve(s.name))
		}
	}
	return out, nil
}

// ValidTopic reports why Kafka would refuse a topic name, or nil.
func ValidTopic(topic string) error {
	switch {
	case topic == "":
		return fmt.Errorf("topic name is empty")
	case len(topic) > 249:
		return fmt.Errorf("topic name %.40q... is %d characters; Kafka allows 249", topic, len(topic))
	case topic == "." || topic == "..":
		return fmt.Errorf("topic name %q is not allowed by Kafka", topic)
	}
	// By rune, so the message quotes the character the user wrote ('ü'),
	// not its first byte.
	for _, c := range topic {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("topic name %q has %q; Kafka allows only ASCII letters, digits, '.', '_' and '-'", topic, c)
		}
	}
	return nil
}
