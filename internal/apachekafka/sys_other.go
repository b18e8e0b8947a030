//go:build !unix

package apachekafka

import (
	"errors"
	"os"
	"syscall"
)

var errLocked = errors.New("locked by another process")

var errUnsupported = errors.New("apachekafka: only Linux and other Unix systems are supported")

func sysProcAttr() *syscall.SysProcAttr { return nil }

func tryLock(*os.File) error { return errUnsupported }

func signalGroup(int, syscall.Signal) error { return errUnsupported }
