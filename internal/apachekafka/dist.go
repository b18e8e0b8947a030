package apachekafka

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed" // pom.xml
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// DefaultVersion is the Apache Kafka release the harness runs when
// Options.Version is empty. pom.xml's kafka.version must say the same.
const DefaultVersion = "4.4.0"

// Environment variables that override where the harness finds its tools
// and keeps its cache. Options fields, when set, win over them.
const (
	// CacheEnv names the cache root (default: os.UserCacheDir()/outbox-relay,
	// that is $XDG_CACHE_HOME/outbox-relay or ~/.cache/outbox-relay).
	CacheEnv = "OUTBOX_RELAY_KAFKA_CACHE"
	// JavaEnv names the java binary (default: $JAVA_HOME/bin/java, then
	// java on PATH). Kafka 4 brokers need Java 17 or newer.
	JavaEnv = "OUTBOX_RELAY_JAVA"
	// MavenEnv names the mvn binary (default: mvn on PATH).
	MavenEnv = "OUTBOX_RELAY_MVN"
)

// The pom that names the broker's jars; see its header comment.
//
//go:embed pom.xml
var pomXML []byte

const (
	brokerMain  = "kafka.Kafka"
	storageMain = "kafka.tools.StorageTool"
	readyFile   = "ready" // in a version dir: what it was fetched from
	fetchLimit  = 15 * time.Minute
	lockPoll    = 100 * time.Millisecond
)

// dist is one fetched Kafka release and the JVM that runs it.
type dist struct {
	version   string
	dir       string // <cache>/kafka-<version>
	classpath string // the jars of dir/lib, sorted, joined with ':'
	java      string
	cds       string // AppCDS archive for java+classpath; "" until trained
}

// findDist returns the release's jars, fetching them with Maven first when
// the cache lacks them. Concurrent callers (test packages run in parallel)
// serialise on a lock file; only the first fetches.
func findDist(ctx context.Context, opts *Options) (*dist, error) {
	java, err := findJava(opts.Java)
	if err != nil {
		return nil, err
	}
	root, err := cacheRoot(opts.CacheDir)
	if err != nil {
		return nil, err
	}
	d := &dist{version: opts.Version, dir: filepath.Join(root, "kafka-"+opts.Version), java: java}
	if !d.fetched() {
		unlock, err := lockFile(ctx, d.dir+".lock")
		if err != nil {
			return nil, err
		}
		defer unlock()
		if !d.fetched() {
			if err := d.fetch(ctx, root, opts.logf); err != nil {
				return nil, err
			}
		}
	}
	if d.classpath, err = classpath(filepath.Join(d.dir, "lib")); err != nil {
		return nil, err
	}
	d.cds = filepath.Join(d.dir, "cds-"+javaID(java)+".jsa")
	return d, nil
}

func findJava(java string) (string, error) {
	if java == "" {
		java = os.Getenv(JavaEnv)
	}
	if java == "" {
		if home := os.Getenv("JAVA_HOME"); home != "" {
			java = filepath.Join(home, "bin", "java")
		}
	}
	if java == "" {
		java = "java"
	}
	path, err := exec.LookPath(java)
	if err != nil {
		return "", fmt.Errorf("apachekafka: find java %q: %w; install a JDK 17 or newer (apt-get install -y default-jdk-headless) or set %s",
			java, err, JavaEnv)
	}
	return path, nil
}

func cacheRoot(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv(CacheEnv)
	}
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("apachekafka: find a cache dir: %w; set %s", err, CacheEnv)
		}
		dir = filepath.Join(base, "outbox-relay")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("apachekafka: create cache dir: %w; set %s to a writable directory", err, CacheEnv)
	}
	return filepath.Abs(dir)
}

// stamp identifies what a version dir was fetched from: the pom and the
// version. A changed pom fetches again.
func (d *dist) stamp() string {
	sum := sha256.Sum256(pomXML)
	return d.version + " " + hex.EncodeToString(sum[:]) + "\n"
}

func (d *dist) fetched() bool {
	raw, err := os.ReadFile(filepath.Join(d.dir, readyFile))
	return err == nil && string(raw) == d.stamp()
}

// fetch runs Maven into a fresh directory and renames it into place, so
// a fetch cut short leaves nothing that looks complete.
func (d *dist) fetch(ctx context.Context, root string, logf func(string, ...any)) error {
	mvn := os.Getenv(MavenEnv)
	if mvn == "" {
		mvn = "mvn"
	}
	if _, err := exec.LookPath(mvn); err != nil {
		return fmt.Errorf("apachekafka: find Maven %q to fetch Kafka %s: %w; install it (apt-get install -y maven) or set %s",
			mvn, d.version, err, MavenEnv)
	}
	tmp, err := os.MkdirTemp(root, ".fetch-*")
	if err != nil {
		return fmt.Errorf("apachekafka: create fetch dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	pom := filepath.Join(tmp, "pom.xml")
	if err := os.WriteFile(pom, pomXML, 0o644); err != nil {
		return fmt.Errorf("apachekafka: write pom: %w", err)
	}
	logf("apachekafka: fetching Kafka %s with Maven into %s (once)", d.version, d.dir)
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, fetchLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, mvn, "-B", "-q", "-f", pom,
		"-Dmaven.repo.local="+filepath.Join(root, "m2"),
		"-Dkafka.version="+d.version,
		"dependency:copy-dependencies",
		"-DincludeScope=runtime",
		"-DoutputDirectory="+filepath.Join(tmp, "lib"))
	cmd.Dir = tmp
	cmd.SysProcAttr = sysProcAttr()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apachekafka: fetch Kafka %s with Maven: %w\n%s\n(check that Maven Central is reachable and that %s is a released org.apache.kafka:kafka_2.13 version)",
			d.version, err, tail(out, 30), d.version)
	}
	if err := os.WriteFile(filepath.Join(tmp, readyFile), []byte(d.stamp()), 0o644); err != nil {
		return fmt.Errorf("apachekafka: mark fetch complete: %w", err)
	}
	if err := os.RemoveAll(d.dir); err != nil {
		return fmt.Errorf("apachekafka: remove stale %s: %w", d.dir, err)
	}
	if err := os.Rename(tmp, d.dir); err != nil {
		return fmt.Errorf("apachekafka: move fetched jars into place: %w", err)
	}
	if err := os.Chmod(d.dir, 0o755); err != nil { // MkdirTemp made it 0700
		return fmt.Errorf("apachekafka: open up %s: %w", d.dir, err)
	}
	logf("apachekafka: fetched Kafka %s in %s", d.version, time.Since(start).Round(time.Millisecond))
	return nil
}

func classpath(lib string) (string, error) {
	entries, err := os.ReadDir(lib)
	if err != nil {
		return "", fmt.Errorf("apachekafka: list jars: %w", err)
	}
	var jars []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".jar") {
			jars = append(jars, filepath.Join(lib, e.Name()))
		}
	}
	if len(jars) == 0 {
		return "", fmt.Errorf("apachekafka: no jars in %s; remove its parent directory to fetch again", lib)
	}
	slices.Sort(jars)
	return strings.Join(jars, string(os.PathListSeparator)), nil
}

// javaID names a JVM build: a class-data archive only maps into the JVM
// that wrote it, and an upgraded JDK replaces the binary.
func javaID(java string) string {
	real, err := filepath.EvalSymlinks(java)
	if err != nil {
		real = java
	}
	id := real
	if fi, err := os.Stat(real); err == nil {
		id = fmt.Sprintf("%s %d %d", real, fi.Size(), fi.ModTime().UnixNano())
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:6])
}

// lockFile takes an exclusive lock on path, polling until ctx ends.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("apachekafka: open lock file: %w", err)
	}
	t := time.NewTicker(lockPoll)
	defer t.Stop()
	for {
		err := tryLock(f)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, errLocked) {
			f.Close()
			return nil, fmt.Errorf("apachekafka: lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("apachekafka: wait for another process to fetch Kafka (%s): %w", path, ctx.Err())
		case <-t.C:
		}
	}
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}
