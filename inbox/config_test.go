package inbox

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func nopHandler(context.Context, pgx.Tx, Message) error { return nil }

type nopDB struct{ DB }

func TestConfigErrorsNameFieldAndFix(t *testing.T) {
	base := func() Config {
		return Config{Brokers: []string{"k:9092"}, Group: "g", Topics: []string{"t"}, DB: nopDB{}, Handler: nopHandler}
	}
	if _, err := New(base()); err != nil {
		t.Fatalf("a minimal config: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no brokers", func(c *Config) { c.Brokers = nil }, "Config.Brokers is empty; name at least one host:port"},
		{"no group", func(c *Config) { c.Group = "" }, "Config.Group is empty"},
		{"no topics", func(c *Config) { c.Topics = nil }, "Config.Topics and TopicRegex are both empty"},
		{"both", func(c *Config) { c.TopicRegex = regexp.MustCompile("x") }, "are both set; use one of them"},
		{"no db", func(c *Config) { c.DB = nil }, "Config.DB is nil; pass a *pgxpool.Pool"},
		{"no handler", func(c *Config) { c.Handler = nil }, "Config.Handler is nil"},
		{"dead-letter loop", func(c *Config) { c.Topics = []string{"g.dead-letter"} }, `holds the dead-letter topic "g.dead-letter"`},
		{"table", func(c *Config) { c.Table = "a.b.c" }, `Config.Table is "a.b.c"; use a name or schema.name`},
		{"long table", func(c *Config) { c.Table = strings.Repeat("x", 64) }, "use names of 1 to 63 bytes"},
		{"attempts", func(c *Config) { c.MaxAttempts = -1 }, "Config.MaxAttempts is -1; use at least 1"},
		{"timeout", func(c *Config) { c.ShutdownTimeout = -time.Second }, "Config.ShutdownTimeout is -1s"},
		{"timeout past the rebalance", func(c *Config) { c.ShutdownTimeout = time.Minute },
			"Config.ShutdownTimeout is 1m0s, not below Sarama.Consumer.Group.Rebalance.Timeout 1m0s; shorten it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base()
			tc.edit(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// testdata/inbox.sql is the DDL CreateSchema runs for the default table.
func TestSchemaMatchesTestdata(t *testing.T) {
	b, err := os.ReadFile("../testdata/inbox.sql")
	if err != nil {
		t.Fatal(err)
	}
	ddl, err := SchemaSQL(DefaultTable)
	if err != nil {
		t.Fatal(err)
	}
	var body []string
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if !strings.HasPrefix(l, "--") {
			body = append(body, l)
		}
	}
	if got := strings.Join(body, ""); got != ddl {
		t.Fatalf("testdata/inbox.sql:\n%s\nSchemaSQL:\n%s", got, ddl)
	}
	if ddl, _ := SchemaSQL(`app."Inbox"`); !strings.Contains(ddl, `"app"."""Inbox"""`) {
		t.Errorf("a quoted name is not escaped: %s", ddl)
	}
}

func TestBackoffDoublesToTheCap(t *testing.T) {
	c := &Consumer{cfg: Config{Backoff: 100 * time.Millisecond, MaxBackoff: time.Second}}
	var got []time.Duration
	for a := 1; a <= 6; a++ {
		got = append(got, c.backoff(a))
	}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("backoffs %v, want %v ms", got, want)
		}
	}
}

func TestTruncateKeepsRunesWhole(t *testing.T) {
	if got := truncate("héllo", 2); got != "h" {
		t.Errorf("truncate cut a rune: %q", got)
	}
	if got := truncate("abc", 5); got != "abc" {
		t.Errorf("truncate changed a short string: %q", got)
	}
}
