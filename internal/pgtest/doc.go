// Package pgtest runs a throwaway PostgreSQL 15 cluster for integration
// tests, the demo binary and benchmarks.
//
// The relay reads the outbox through logical replication, so tests need a
// real server with wal_level=logical, replication slots and a replication
// pg_hba entry; a mock would not exercise slots, WAL retention or crash
// recovery. Start creates a private cluster (initdb into a temporary
// directory, a free 127.0.0.1 port, trust authentication, durability turned
// off for speed) and waits until it accepts connections. Stop, Start and
// Restart let tests simulate database outages on the same port and data
// directory, and Close removes everything.
//
// The core API takes a context and returns errors, so it works outside
// "go test"; New is the thin helper for tests that registers Close with
// t.Cleanup and prints the server log when the test failed.
//
// Binaries are taken from /usr/lib/postgresql/15/bin unless PGTEST_BINDIR is
// set. PostgreSQL refuses to run as root, so when the current process is
// root the server binaries run as the "postgres" OS user through runuser and
// the temporary directory is chowned to that user.
package pgtest
