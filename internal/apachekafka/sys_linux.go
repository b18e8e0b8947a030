package apachekafka

import "syscall"

// sysProcAttr puts a child in its own process group (so Kill reaches all
// of it and a terminal's Ctrl-C does not) and has the kernel SIGKILL it
// when the thread that started it exits, so a test binary killed with -9
// leaves no JVM behind. node.spawn keeps that thread alive for the child's
// life (runtime.LockOSThread).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
