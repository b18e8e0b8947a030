//go:build unix && !linux

package apachekafka

import "syscall"

// sysProcAttr puts a child in its own process group. Outside Linux there
// is no parent-death signal: a test binary killed with -9 can leave a JVM
// running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
