package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

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
