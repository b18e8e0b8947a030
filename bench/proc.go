package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// 100 on every Linux this runs on.
const clockTicks = 100

// procCPU is the user+system CPU a live process has used so far.
func procCPU(pid int) (time.Duration, error) {
	return statCPU(fmt.Sprintf("/proc/%d/stat", pid))
}

// statCPU reads utime+stime from a stat file: /proc/<pid>/stat for a
// process, /proc/<pid>/task/<tid>/stat for one of its threads
// (/proc/<tid>/stat would count the whole process).
func statCPU(path string) (time.Duration, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may hold spaces: fields
	// count from the last ')'.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse %s", path)
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("parse %s", path)
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse %s", path)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// jitCPU is the user+system CPU the JVM pid's JIT compiler threads
// (C1 CompilerThreadN, C2 CompilerThreadN) have used so far.
func jitCPU(pid int) (time.Duration, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var total time.Duration
	for _, t := range tasks {
		dir := fmt.Sprintf("/proc/%d/task/%s/", pid, t.Name())
		comm, err := os.ReadFile(dir + "comm")
		if err != nil || !bytes.Contains(comm, []byte(" CompilerThre")) {
			continue // a thread that exited since ReadDir, or not a compiler
		}
		if cpu, err := statCPU(dir + "stat"); err == nil {
			total += cpu
		}
	}
	return total, nil
}

// procPeakRSS is VmHWM, the highest resident set size so far, in bytes.
func procPeakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// selfCPU is this process's user+system CPU: the in-process broker, the
// bench's pollers and consumers.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// walsender follows the Postgres backend that decodes a slot, so the
// report can say how busy Postgres' side was.
type walsender struct {
	pool *pgxpool.Pool
	slot string
	pid  int
	cpu  time.Duration
}

// sample finds the walsender once the slot is active and records its CPU;
// the last sample before the backend exits is its total.
func (w *walsender) sample(ctx context.Context) {
	if w.pid == 0 {
		var pid *int32
		if err := w.pool.QueryRow(ctx, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", w.slot).Scan(&pid); err != nil || pid == nil {
			return
		}
		w.pid = int(*pid)
	}
	if cpu, err := procCPU(w.pid); err == nil {
		w.cpu = cpu
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
