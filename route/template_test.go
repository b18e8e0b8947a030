package route

import (
	"slices"
	"strings"
	"testing"
)

func TestTemplateColumns(t *testing.T) {
	renamed := Columns{ID: "event_id", AggregateType: "aggregatetype", AggregateID: "aggregateid", EventType: "type", Payload: "body"}
	for _, tc := range []struct {
		tmpl    string
		cols    Columns
		want    []string
		wantErr string
	}{
		{tmpl: "fixed", cols: DefaultColumns()},
		{tmpl: "outbox.event.{aggregate_type}", cols: DefaultColumns(), want: []string{"aggregate_type"}},
		{tmpl: "{aggregate_type}.{event_type}", cols: renamed, want: []string{"aggregatetype", "type"}},
		{tmpl: "{tenant}-{id}", cols: renamed, want: []string{"tenant", "event_id"}},
		{tmpl: "", wantErr: "topic template is empty"},
		{tmpl: "a.{b", wantErr: `topic template "a.{b": unclosed '{'`},
		{tmpl: "a.{}", wantErr: `topic template "a.{}": bad placeholder {}; write {column_name}`},
		{tmpl: "a.{b c}", wantErr: "bad placeholder {b c}"},
		{tmpl: "{{b}", wantErr: "bad placeholder {{b}"},
	} {
		got, err := TemplateColumns(tc.tmpl, tc.cols)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("TemplateColumns(%q) = %q, %v; want error %q", tc.tmpl, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("TemplateColumns(%q) = %q, %v; want %q", tc.tmpl, got, err, tc.want)
		}
	}
}

func TestValidTopic(t *testing.T) {
	for _, tc := range []struct{ topic, wantErr string }{
		{"outbox.event.Order-Created_v1", ""},
		{strings.Repeat("a", 249), ""},
		{"", "topic name is empty"},
		{".", `topic name "." is not allowed by Kafka`},
		{"..", `topic name ".." is not allowed by Kafka`},
		{strings.Repeat("a", 250), "is 250 characters; Kafka allows 249"},
		{"a/b", `topic name "a/b" has '/'; Kafka allows only ASCII letters, digits, '.', '_' and '-'`},
		// Regression: the message quoted the first byte of a multi-byte
		// rune ('Ã' for 'ü').
		{"outbox.event.grüße", "has 'ü'"},
	} {
		err := ValidTopic(tc.topic)
		if (err != nil) != (tc.wantErr != "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("ValidTopic(%.20q) = %v, want %q", tc.topic, err, tc.wantErr)
		}
	}
}
