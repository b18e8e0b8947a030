package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// version is the release, set at link time by a release build
// (-ldflags "-X main.version=v1.2.3"); without it the module version the Go
// toolchain stamped (a pseudo-version from the VCS, or "(devel)") is used.
var version = ""

// buildInfo is what `outbox-relay version` prints and
// outbox_relay_build_info carries: enough to match a running process to
// its source and to the Kafka client it speaks with.
type buildInfo struct {
	Version  string
	Commit   string // VCS revision, "+dirty" when the tree had changes
	Go       string
	Sarama   string
	Modified bool
}

// readBuildInfo reads the toolchain's build record of this binary.
func readBuildInfo() buildInfo {
	bi := buildInfo{Version: version, Commit: "unknown", Go: runtime.Version(), Sarama: "unknown"}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		if bi.Version == "" {
			bi.Version = "unknown"
		}
		return bi
	}
	if bi.Version == "" {
		bi.Version = info.Main.Version
	}
	if bi.Version == "" {
		bi.Version = "(devel)"
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			bi.Commit = s.Value
		case "vcs.modified":
			bi.Modified = s.Value == "true"
		}
	}
	if bi.Modified && bi.Commit != "unknown" {
		bi.Commit += "+dirty"
	}
	for _, d := range info.Deps {
		if d.Path == "github.com/IBM/sarama" {
			bi.Sarama = d.Version
			if d.Replace != nil {
				bi.Sarama = d.Replace.Version
			}
		}
	}
	return bi
}

func (b buildInfo) String() string {
	return fmt.Sprintf("outbox-relay %s (commit %s, %s, sarama %s)", b.Version, b.Commit, b.Go, b.Sarama)
}

// registerBuildInfo adds outbox_relay_build_info, a constant 1 whose
// labels say which build is running (join it to other series by instance).
func registerBuildInfo(reg prometheus.Registerer, b buildInfo) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "outbox_relay_build_info",
		Help: "Always 1; the labels name the running build: version, commit, Go version and sarama version.",
		ConstLabels: prometheus.Labels{
			"version": b.Version, "commit": b.Commit, "goversion": b.Go, "sarama": b.Sarama,
		},
	})
	g.Set(1)
	reg.MustRegister(g)
}

func runVersion(_ context.Context, args []string, _ func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "outbox-relay version takes no arguments (got %s)\n", strings.Join(args, " "))
		return errUsage
	}
	fmt.Fprintln(stdout, readBuildInfo())
	return nil
}
