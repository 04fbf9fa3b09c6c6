// Command coffer-bench prints Coffer's start-up and memory figures for
// `make bench` (scripts/bench.sh starts the registry and containerd it
// measures against; docs/performance.md explains the figures). See
// package github.com/cofferhq/coffer/integration/bench.
//
// It exits 1 on an error (a run that fails, a missing log line), never
// because a target was missed.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	ggcrname "github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/integration/bench"
)

func main() {
	var cfg bench.Config
	flag.StringVar(&cfg.Ctr, "ctr", "", "ctr binary")
	flag.StringVar(&cfg.Address, "address", "", "containerd gRPC socket")
	flag.StringVar(&cfg.Namespace, "namespace", "", "containerd namespace")
	flag.StringVar(&cfg.ContainerdLog, "containerd-log", "", "containerd's log file (level info or lower)")
	flag.StringVar(&cfg.Image, "image", "", "busybox test image reference, already pulled into containerd")
	flag.StringVar(&cfg.ShimConfig, "shim-config", "", "shim config (--runtime-config-path)")
	flag.StringVar(&cfg.ShimBinary, "shim-binary", "", "containerd-shim-cc-v2 binary")
	flag.StringVar(&cfg.FIFODir, "fifo-dir", "", "ctr --fifo-dir")
	flag.StringVar(&cfg.FloorInit, "floor-init", "", "static poweroff program for the floor initramfs")
	flag.StringVar(&cfg.WorkDir, "work-dir", "", "scratch directory (short path)")
	flag.IntVar(&cfg.Runs, "runs", 5, "measured runs of each kind")
	timeline := flag.Bool("timeline", false, "also print the timeline (host milestones and console lines) of the median run")
	attested := flag.Bool("attested", false, "measure attested runs only (no floor): the attestation phase, pull-and-decrypt throughput and cc-agent memory; needs --annotation with init-data and a sim-TEE shim config")
	annotation := flag.String("annotation", "", "with --attested: ctr run --annotation KEY=VALUE (the init-data)")
	warmup := flag.Bool("warmup", true, "with --attested: do one unmeasured run first")
	title := flag.String("title", "attested runs", "with --attested: heading of the figures")
	pushFiller := flag.Int("push-filler-mib", 0, "instead of measuring: push the busybox image plus an uncompressed filler layer of this many MiB to --registry as --repo, print its reference")
	registry := flag.String("registry", "", "with --push-filler-mib: plain-HTTP registry host:port")
	repo := flag.String("repo", "", "with --push-filler-mib: repository:tag")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "coffer-bench: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case *pushFiller > 0:
		err = pushFillerImage(ctx, *registry, *repo, *pushFiller)
	case *attested:
		if *annotation != "" {
			cfg.RunArgs = []string{"--annotation", *annotation}
		}
		err = runAttested(ctx, cfg, *warmup, *title)
	default:
		err = run(ctx, cfg, *timeline)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "coffer-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg bench.Config, timeline bool) error {
	b, err := bench.New(cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	m := machine()
	m.LoadBefore = loadAverage()
	fmt.Printf("==> measuring %d floor boots and %d container runs (plus one warm-up each), accel %s\n", cfg.Runs, cfg.Runs, b.Accel())
	res, err := b.Run(ctx, os.Stdout)
	if err != nil {
		return err
	}
	m.LoadAfter = loadAverage()
	fmt.Println()
	if err := res.Report(os.Stdout, m); err != nil {
		return err
	}
	if timeline {
		fmt.Println()
		return bench.WriteTimeline(os.Stdout, res.MedianRun())
	}
	return nil
}

// runAttested measures attested runs and prints their figures.
func runAttested(ctx context.Context, cfg bench.Config, warmup bool, title string) error {
	b, err := bench.New(cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	m := machine()
	fmt.Printf("==> %s: %d attested container runs of %s\n    machine: %d x %s, kernel %s, %s, accel %s, load average %s\n",
		title, cfg.Runs, cfg.Image, m.CPUs, m.CPUModel, m.Kernel, m.QEMU, b.Accel(), loadAverage())
	runs, err := b.RunAttested(ctx, os.Stdout, warmup)
	if err != nil {
		return err
	}
	f, ok := bench.SummariseAttested(runs)
	if !ok {
		return fmt.Errorf("no attested runs measured")
	}
	fmt.Println()
	return bench.WriteAttested(os.Stdout, fmt.Sprintf("%s (load average after: %s)", title, loadAverage()), f)
}

// pushFillerImage pushes bench.FillerImage(mib) to registry/repo over
// plain HTTP and prints the reference.
func pushFillerImage(ctx context.Context, registry, repo string, mib int) error {
	if registry == "" || repo == "" {
		return fmt.Errorf("--push-filler-mib needs --registry HOST:PORT and --repo NAME:TAG")
	}
	tag, err := ggcrname.NewTag(registry+"/"+repo, ggcrname.Insecure)
	if err != nil {
		return fmt.Errorf("parse image reference %q: %w: want HOST:PORT and NAME[:TAG]", registry+"/"+repo, err)
	}
	img, err := bench.FillerImage(mib)
	if err != nil {
		return err
	}
	if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("push %s: %w", tag, err)
	}
	fmt.Println(tag.Name())
	return nil
}

// loadAverage returns the first three fields of /proc/loadavg, or "".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// machine describes this host for the report header.
func machine() bench.Machine {
	m := bench.Machine{Date: time.Now(), CPUs: runtime.NumCPU(), CPUModel: "unknown CPU", Kernel: "unknown", QEMU: "QEMU version unknown"}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if out, err := exec.Command("qemu-system-x86_64", "--version").Output(); err == nil {
		m.QEMU, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	}
	return m
}
