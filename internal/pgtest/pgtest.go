package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// DefaultBinDir is where Debian/Ubuntu's postgresql-15 package installs
	// the server binaries.
	DefaultBinDir = "/usr/lib/postgresql/15/bin"
	// BinDirEnv overrides DefaultBinDir.
	BinDirEnv = "PGTEST_BINDIR"

	// Superuser is the database superuser created by initdb. It is also
	// the OS account the server runs as when the caller is root.
	Superuser = "postgres"

	startTimeout = 30 * time.Second
	stopTimeout  = 60 * time.Second
	pollInterval = 50 * time.Millisecond
	// startAttempts bounds how often Start picks a new port when the one it
	// chose was taken by someone else between picking and binding.
	startAttempts = 3
	confFile      = "pgtest.conf"
)

// Options configures a Server. The zero value is a logical-replication
// capable server.
type Options struct {
	// WALLevel is the wal_level setting; default "logical".
	WALLevel string
	// Settings are extra postgresql.conf settings, e.g.
	// "wal_sender_timeout": "5s". They are applied after (and so override)
	// the defaults. port, listen_addresses and unix_socket_directories are
	// managed by the package and cannot be set here.
	Settings map[string]string
	// Logf, if set, receives progress lines (start, stop, errors during
	// Close).
	Logf func(format string, args ...any)
}

// Server is a running (or stopped) throwaway PostgreSQL cluster. Its
// methods are safe for concurrent use.
type Server struct {
	logf    func(format string, args ...any)
	binDir  string
	dir     string // temp dir holding data, socket and log
	dataDir string
	logPath string
	port    int
	owner   *account // non-nil when binaries run as the postgres OS user

	mu      sync.Mutex // serialises Start/Stop/Close
	running bool
	closed  bool
}

type account struct{ uid, gid int }

// Start creates a new cluster with initdb in a fresh temporary directory,
// starts it on a free 127.0.0.1 port and waits (at most 30 s) until it
// accepts connections. On failure nothing is left behind.
func Start(ctx context.Context, opts Options) (srv *Server, err error) {
	s := &Server{logf: opts.Logf}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	if err := checkSettings(opts.Settings); err != nil {
		return nil, err
	}
	if s.binDir, err = findBinDir(); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if s.owner, err = lookupOwner(); err != nil {
			return nil, err
		}
	}

	if s.dir, err = os.MkdirTemp(os.TempDir(), "pgtest-*"); err != nil {
		return nil, fmt.Errorf("pgtest: create temp dir: %w", err)
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.dataDir = filepath.Join(s.dir, "data")
	s.logPath = filepath.Join(s.dir, "postgres.log")
	if err := s.chown(s.dir); err != nil {
		return nil, err
	}
	if s.owner != nil {
		// Catches a parent directory the postgres user cannot traverse,
		// which would otherwise surface as an obscure initdb error.
		if out, err := s.command(ctx, "test", "-w", s.dir).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("pgtest: OS user %q cannot write %s (is every parent directory traversable?): %v %s",
				Superuser, s.dir, err, out)
		}
	}

	if err := s.initdb(ctx); err != nil {
		return nil, err
	}
	if err := s.ensureHBA(); err != nil {
		return nil, err
	}

	for attempt := 1; ; attempt++ {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		if err := s.writeConf(opts); err != nil {
			return nil, err
		}
		logStart := s.logSize()
		err = s.startLocked(ctx)
		if err == nil {
			return s, nil
		}
		if attempt >= startAttempts || !s.bindFailed(logStart) {
			return nil, err
		}
		s.logf("pgtest: port %d was taken, retrying with another one", s.port)
	}
}

func findBinDir() (string, error) {
	dir := os.Getenv(BinDirEnv)
	if dir == "" {
		dir = DefaultBinDir
	}
	for _, bin := range []string{"initdb", "pg_ctl", "postgres"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("pgtest: PostgreSQL 15 server binaries not found in %s (%v): run `apt-get install -y postgresql` or set %s",
				dir, err, BinDirEnv)
		}
	}
	return dir, nil
}

func lookupOwner() (*account, error) {
	u, err := user.Lookup(Superuser)
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root but OS user %q does not exist (run `apt-get install -y postgresql`): %w",
			Superuser, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("pgtest: uid of %q: %w", Superuser, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("pgtest: gid of %q: %w", Superuser, err)
	}
	if _, err := exec.LookPath("runuser"); err != nil {
		return nil, fmt.Errorf("pgtest: running as root needs runuser to drop privileges: %w", err)
	}
	return &account{uid: uid, gid: gid}, nil
}

// command builds a command that runs as the postgres OS user when the
// caller is root. name is resolved in the PostgreSQL bin dir when it exists
// there, otherwise through PATH.
func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	path := name
	if p := filepath.Join(s.binDir, name); fileExists(p) {
		path = p
	}
	var cmd *exec.Cmd
	if s.owner != nil {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", Superuser, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	return cmd
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// run runs a PostgreSQL binary and wraps its output into the error.
func (s *Server) run(ctx context.Context, name string, args ...string) error {
	out, err := s.command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: %s %s: %w\n%s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (s *Server) initdb(ctx context.Context) error {
	return s.run(ctx, "initdb",
		"-D", s.dataDir,
		"-U", Superuser,
		"-A", "trust",
		"-E", "UTF8",
		"--locale=C",
		"--no-sync",
		"--no-instructions",
	)
}

// ensureHBA makes sure pg_hba.conf has the entries the package relies on.
// initdb -A trust writes all of them already (PostgreSQL 15); this only
// guards against a different initdb default.
func (s *Server) ensureHBA() error {
	required := [][]string{
		{"local", "all", "all", "trust"},
		{"host", "all", "all", "127.0.0.1/32", "trust"},
		{"host", "replication", "all", "127.0.0.1/32", "trust"},
	}
	path := filepath.Join(s.dataDir, "pg_hba.conf")
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("pgtest: read pg_hba.conf: %w", err)
	}
	var have [][]string
	for line := range strings.Lines(string(raw)) {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if f := strings.Fields(line); len(f) > 0 {
			have = append(have, f)
		}
	}
	var missing []string
	for _, want := range required {
		if !slices.ContainsFunc(have, func(f []string) bool { return slices.Equal(f, want) }) {
			missing = append(missing, strings.Join(want, "\t"))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pgtest: open pg_hba.conf: %w", err)
	}
	_, err = fmt.Fprintf(f, "\n# added by pgtest\n%s\n", strings.Join(missing, "\n"))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pgtest: append to pg_hba.conf: %w", err)
	}
	return nil
}

func checkSettings(settings map[string]string) error {
	for k := range settings {
		switch k {
		case "port", "listen_addresses", "unix_socket_directories":
			return fmt.Errorf("pgtest: setting %q is managed by pgtest", k)
		}
		if !validSettingName(k) {
			return fmt.Errorf("pgtest: invalid setting name %q", k)
		}
	}
	return nil
}

// validSettingName accepts GUC names, including custom "ext.name" ones,
// and so keeps keys from injecting extra lines into the config file.
func validSettingName(name string) bool {
	if name == "" {
		return false
	}
	for i, r := range name {
		switch {
		case r == '_', 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z':
		case i > 0 && (r == '.' || '0' <= r && r <= '9'):
		default:
			return false
		}
	}
	return true
}

// writeConf writes the package's settings into data/pgtest.conf and makes
// postgresql.conf include it (once).
func (s *Server) writeConf(opts Options) error {
	settings := map[string]string{
		"wal_level":             "logical",
		"max_replication_slots": "20",
		"max_wal_senders":       "20",
		"fsync":                 "off",
		"synchronous_commit":    "off",
		"full_page_writes":      "off",
		"shared_buffers":        "128MB",
		"max_connections":       "200",
		"wal_sender_timeout":    "60s",
		"log_min_messages":      "warning",
	}
	if opts.WALLevel != "" {
		settings["wal_level"] = opts.WALLevel
	}
	maps.Copy(settings, opts.Settings) // validated by checkSettings
	settings["listen_addresses"] = "127.0.0.1"
	settings["port"] = strconv.Itoa(s.port)
	settings["unix_socket_directories"] = s.dir

	var b strings.Builder
	b.WriteString("# written by pgtest; overrides postgresql.conf\n")
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&b, "%s = '%s'\n", k, strings.ReplaceAll(settings[k], "'", "''"))
	}
	if err := s.writeFile(filepath.Join(s.dataDir, confFile), []byte(b.String())); err != nil {
		return err
	}

	main := filepath.Join(s.dataDir, "postgresql.conf")
	raw, err := os.ReadFile(main)
	if err != nil {
		return fmt.Errorf("pgtest: read postgresql.conf: %w", err)
	}
	include := fmt.Sprintf("include '%s'\n", confFile)
	if strings.Contains(string(raw), include) {
		return nil
	}
	raw = append(raw, "\n"+include...)
	return s.writeFile(main, raw)
}

func (s *Server) writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	return s.chown(path)
}

func (s *Server) chown(path string) error {
	if s.owner == nil {
		return nil
	}
	if err := os.Chown(path, s.owner.uid, s.owner.gid); err != nil {
		return fmt.Errorf("pgtest: chown %s to %s: %w", path, Superuser, err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: pick free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("pgtest: pick free port: %w", err)
	}
	return port, nil
}

func (s *Server) logSize() int64 {
	fi, err := os.Stat(s.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// bindFailed reports whether the log written since offset says the server
// could not bind its port.
func (s *Server) bindFailed(offset int64) bool {
	raw, err := os.ReadFile(s.logPath)
	if err != nil || int64(len(raw)) < offset {
		return false
	}
	return bytes.Contains(raw[offset:], []byte("could not bind"))
}

// startLocked starts the postmaster and waits until it accepts TCP
// connections. s.mu must be held (or s not yet shared).
func (s *Server) startLocked(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()

	// pg_ctl -w already waits for the postmaster to report ready and fails
	// fast when it dies; the pgx poll below confirms that the TCP listener
	// the callers use is reachable.
	err := s.run(ctx, "pg_ctl", "start",
		"-D", s.dataDir,
		"-l", s.logPath,
		"-w", "-t", strconv.Itoa(int(startTimeout/time.Second)),
		"-s",
	)
	if err == nil {
		err = s.waitReady(ctx)
	}
	if err != nil {
		// The postmaster may be half up (e.g. ctx expired while pg_ctl
		// waited); don't leave it behind.
		_ = s.run(context.Background(), "pg_ctl", "stop", "-D", s.dataDir, "-m", "immediate", "-w", "-s")
		return fmt.Errorf("%w\n--- server log tail ---\n%s", err, s.LogTail(30))
	}
	s.running = true
	s.logf("pgtest: postgres listening on 127.0.0.1:%d (data dir %s)", s.port, s.dataDir)
	return nil
}

func (s *Server) waitReady(ctx context.Context) error {
	var lastErr error
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(attemptCtx, s.URL())
		if err == nil {
			err = conn.Ping(attemptCtx)
			_ = conn.Close(context.Background())
		}
		cancel()
		if err == nil {
			return nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: server on port %d not ready: %w (last error: %v)", s.port, ctx.Err(), lastErr)
		case <-time.After(pollInterval):
		}
	}
}

// Start starts a stopped server again on the same port and data directory
// and waits until it accepts connections. It is a no-op when the server is
// running.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("pgtest: server is closed")
	}
	if s.running {
		return nil
	}
	return s.startLocked(ctx)
}

// Stop stops the server with pg_ctl stop -m mode, where mode is "fast"
// (default when empty), "immediate" (crash-like, recovery on next start) or
// "smart". The server can be started again with Start or Restart. Stopping
// a stopped server is a no-op.
func (s *Server) Stop(mode string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked(mode)
}

func (s *Server) stopLocked(mode string) error {
	switch mode {
	case "":
		mode = "fast"
	case "fast", "immediate", "smart":
	default:
		return fmt.Errorf("pgtest: invalid stop mode %q (want fast, immediate or smart)", mode)
	}
	if !s.running {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := s.run(ctx, "pg_ctl", "stop", "-D", s.dataDir, "-m", mode,
		"-w", "-t", strconv.Itoa(int(stopTimeout/time.Second)), "-s"); err != nil {
		return err
	}
	s.running = false
	s.logf("pgtest: postgres on port %d stopped (%s)", s.port, mode)
	return nil
}

// Restart stops the server with mode (see Stop) and starts it again on the
// same port and data directory, waiting until it accepts connections.
func (s *Server) Restart(ctx context.Context, mode string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("pgtest: server is closed")
	}
	if err := s.stopLocked(mode); err != nil {
		return err
	}
	return s.startLocked(ctx)
}

// Close stops the server (immediate mode) and removes its temporary
// directory. It is idempotent and best effort: errors are reported through
// Options.Logf.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if err := s.stopLocked("immediate"); err != nil {
		s.logf("pgtest: stop during close: %v", err)
		s.killPostmaster()
	}
	if s.dir != "" {
		if err := os.RemoveAll(s.dir); err != nil {
			s.logf("pgtest: remove %s: %v", s.dir, err)
		}
	}
}

// killPostmaster is the last resort when pg_ctl could not stop the server.
// Backends exit on their own once they notice the postmaster is gone.
func (s *Server) killPostmaster() {
	raw, err := os.ReadFile(filepath.Join(s.dataDir, "postmaster.pid"))
	if err != nil {
		return
	}
	first, _, _ := strings.Cut(string(raw), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		s.logf("pgtest: kill postmaster %d: %v", pid, err)
	}
}

// Port is the TCP port the server listens on (127.0.0.1 only).
func (s *Server) Port() int { return s.port }

// URL is a libpq URL connecting to the postgres database as the superuser.
func (s *Server) URL() string { return s.URLFor("postgres", Superuser, "") }

// URLFor is a libpq URL for database db as user (with password, if not
// empty). Authentication is trust, so the password is only passed along.
func (s *Server) URLFor(db, user, password string) string {
	u := url.URL{
		Scheme:   "postgres",
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	if password != "" {
		u.User = url.UserPassword(user, password)
	} else {
		u.User = url.User(user)
	}
	return u.String()
}

// CreateDatabase creates a fresh database (from template1) and returns the
// superuser URL for it. Use one per test to keep tests independent.
func (s *Server) CreateDatabase(ctx context.Context, name string) (string, error) {
	if name == "" {
		return "", errors.New("pgtest: empty database name")
	}
	if err := s.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", err
	}
	return s.URLFor(name, Superuser, ""), nil
}

// Exec runs sql on the postgres database as the superuser over a fresh
// connection. Without args, sql may contain several statements.
func (s *Server) Exec(ctx context.Context, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, s.URL())
	if err != nil {
		return fmt.Errorf("pgtest: connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("pgtest: exec %q: %w", sql, err)
	}
	return nil
}

// LogTail returns the last n lines of the server log, for failure messages.
func (s *Server) LogTail(n int) string {
	if n <= 0 {
		return ""
	}
	raw, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
