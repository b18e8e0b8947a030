package pgtest_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outbox-relay/outbox-relay/internal/pgtest"
)

func queryString(ctx context.Context, t *testing.T, url, sql string) string {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(context.Background())
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestLogicalServer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	srv := pgtest.New(t, pgtest.Options{
		Settings: map[string]string{"wal_sender_timeout": "5s"},
	})

	if got := queryString(ctx, t, srv.URL(), "SHOW wal_level"); got != "logical" {
		t.Fatalf("wal_level = %q, want logical", got)
	}
	if got := queryString(ctx, t, srv.URL(), "SHOW wal_sender_timeout"); got != "5s" {
		t.Fatalf("wal_sender_timeout = %q, want 5s", got)
	}
	if got := queryString(ctx, t, srv.URL(), "SHOW listen_addresses"); got != "127.0.0.1" {
		t.Fatalf("listen_addresses = %q", got)
	}
	if !strings.Contains(srv.URL(), ":"+strconv.Itoa(srv.Port())+"/postgres") {
		t.Fatalf("URL %q does not use port %d", srv.URL(), srv.Port())
	}

	if err := srv.Exec(ctx, "SELECT pg_create_logical_replication_slot('t', 'pgoutput')"); err != nil {
		t.Fatal(err)
	}

	// The replication pg_hba entry must let a walsender connection in.
	replConn, err := pgconn.Connect(ctx, srv.URL()+"&replication=database")
	if err != nil {
		t.Fatalf("replication connection: %v", err)
	}
	res, err := replConn.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
	replConn.Close(context.Background())
	if err != nil || len(res) != 1 || len(res[0].Rows) != 1 {
		t.Fatalf("IDENTIFY_SYSTEM: %v %v", res, err)
	}

	dbURL, err := srv.CreateDatabase(ctx, "app test")
	if err != nil {
		t.Fatal(err)
	}
	if got := queryString(ctx, t, dbURL, "SELECT current_database()"); got != "app test" {
		t.Fatalf("current_database = %q", got)
	}
	if err := srv.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before restart')"); err != nil {
		t.Fatal(err)
	}

	port := srv.Port()
	if err := srv.Restart(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	if srv.Port() != port {
		t.Fatalf("port changed across restart: %d -> %d", port, srv.Port())
	}
	if got := queryString(ctx, t, srv.URL(), "SELECT v FROM kept"); got != "before restart" {
		t.Fatalf("after restart got %q", got)
	}
	if got := queryString(ctx, t, srv.URL(), "SELECT slot_name::text FROM pg_replication_slots"); got != "t" {
		t.Fatalf("slot after restart = %q", got)
	}

	// A crash-like stop followed by Start recovers too.
	if err := srv.Stop("immediate"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("Exec succeeded on a stopped server")
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := queryString(ctx, t, dbURL, "SELECT current_database()"); got != "app test" {
		t.Fatalf("current_database after crash restart = %q", got)
	}
	if tail := srv.LogTail(5); tail == "" {
		t.Fatal("empty log tail")
	}
}

func TestReplicaServer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	srv, err := pgtest.Start(ctx, pgtest.Options{WALLevel: "replica", Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	srv.Close() // idempotent

	srv = pgtest.New(t, pgtest.Options{WALLevel: "replica"})
	if got := queryString(ctx, t, srv.URL(), "SHOW wal_level"); got != "replica" {
		t.Fatalf("wal_level = %q, want replica", got)
	}
}

// Not parallel: it changes the environment.
func TestStartFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	if _, err := pgtest.Start(ctx, pgtest.Options{Settings: map[string]string{"port": "1"}}); err == nil {
		t.Fatal("overriding port was accepted")
	}
	if _, err := pgtest.Start(ctx, pgtest.Options{Settings: map[string]string{"fsync = off\nport": "1"}}); err == nil {
		t.Fatal("setting name with a newline was accepted")
	}

	// A server that cannot start must report its log and leave no
	// directory behind. TMPDIR must be traversable by the postgres user
	// when running as root, hence the explicit mode.
	tmp, err := os.MkdirTemp("", "pgtest-tmpdir-*")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", tmp)
	_, err = pgtest.Start(ctx, pgtest.Options{Settings: map[string]string{"shared_buffers": "lots"}})
	if err == nil || !strings.Contains(err.Error(), "shared_buffers") {
		t.Fatalf("bad setting: err = %v, want one mentioning shared_buffers from the log", err)

	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("failed Start left %d entries in %s", len(left), tmp)
	}

	t.Setenv(pgtest.BinDirEnv, tmp)
	_, err = pgtest.Start(ctx, pgtest.Options{})
	if err == nil || !strings.Contains(err.Error(), "apt-get install -y postgresql") {
		t.Fatalf("missing binaries: err = %v", err)
	}
}
