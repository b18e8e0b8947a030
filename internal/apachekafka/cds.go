package apachekafka

import (
	"context"
	"fmt"
	"os"
	"time"
)

// ensureCDS makes sure d.cds, the class-data archive of this JVM and
// classpath, exists. It trains one when missing: a throwaway single node
// runs with -XX:ArchiveClassesAtExit until ready and is stopped
// gracefully, and the JVM writes the classes it loaded at exit. Later
// JVMs map the archive instead of loading and verifying those classes
// again, which about halves a node's start-up. A JVM that cannot use the
// archive (another build, changed jars) ignores it (-Xshare:auto).
func (d *dist) ensureCDS(ctx context.Context, opts *Options) error {
	if fileExists(d.cds) {
		return nil
	}
	unlock, err := lockFile(ctx, d.cds+".lock")
	if err != nil {
		return err
	}
	defer unlock()
	if fileExists(d.cds) {
		return nil // trained by another process while we waited
	}
	opts.logf("apachekafka: training the class-data archive %s (once per JDK)", d.cds)
	begin := time.Now()
	tmp := fmt.Sprintf("%s.tmp-%d", d.cds, os.Getpid())
	defer os.Remove(tmp)
	trainer := Options{Nodes: 1, Version: d.version, Logf: opts.Logf, JVMFlags: opts.JVMFlags}
	trainer.setDefaults()
	c, err := start(ctx, trainer, &dist{version: d.version, dir: d.dir, classpath: d.classpath, java: d.java}, tmp)
	if err != nil {
		return fmt.Errorf("train class-data archive: %w", err)
	}
	defer c.Close()
	if err := c.Stop(0); err != nil {
		return fmt.Errorf("train class-data archive: %w", err)
	}
	fi, err := os.Stat(tmp)
	if err != nil || fi.Size() == 0 {
		return fmt.Errorf("train class-data archive: the JVM wrote none (%v); see %s", err, c.node(0).stdoutFile())
	}
	if err := os.Rename(tmp, d.cds); err != nil {
		return fmt.Errorf("train class-data archive: %w", err)
	}
	opts.logf("apachekafka: trained the class-data archive in %s", time.Since(begin).Round(time.Millisecond))
	return nil
}
