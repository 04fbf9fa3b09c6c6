package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cofferhq/coffer/guest/initramfs"
	"github.com/cofferhq/coffer/shim"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/vmm"
	"github.com/cofferhq/coffer/vmm/qemu"
)

// floorTimeout bounds one floor VM, QEMU start to exit.
const floorTimeout = 2 * time.Minute

// FloorSample is one boot of the bare-VM floor. Times are offsets from
// QEMU's exec.
type FloorSample struct {
	// Total is QEMU exec until QEMU exited (the guest powered off).
	Total time.Duration
	// Console maps console markers (MarkFirmware, MarkKernel,
	// MarkFloorInit) to when they first appeared.
	Console map[string]time.Duration
	// QEMUPeak is QEMU's peak RSS in bytes (getrusage ru_maxrss of the
	// reaped process).
	QEMUPeak uint64
}

// writeFloorInitrd writes a gzip newc initramfs holding only initPath as
// /init and a /dev/console node, to path.
func writeFloorInitrd(path, initPath string) error {
	if _, err := os.Stat(initPath); err != nil {
		return fmt.Errorf("floor init: %w: build integration/bench/poweroff statically (scripts/bench.sh does)", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create floor initramfs: %w", err)
	}
	entries := []initramfs.Entry{
		initramfs.File("/init", 0o755, initPath),
		initramfs.CharDevice("/dev/console", 0o600, 5, 1),
	}
	if err := initramfs.Write(f, entries, initramfs.Options{}); err != nil {
		f.Close()
		return fmt.Errorf("write floor initramfs %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write floor initramfs %s: %w", path, err)
	}
	return nil
}

// guestCmdline returns the kernel command line the shim uses: the
// configured one, else the guest build's manifest.json "cmdline".
func guestCmdline(cfg *shim.Config) (string, error) {
	if cfg.Hypervisor.KernelCmdline != "" {
		return cfg.Hypervisor.KernelCmdline, nil
	}
	p := filepath.Join(cfg.Hypervisor.GuestDir, "manifest.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("read guest manifest for the kernel command line: %w: run `make guest`", err)
	}
	var m struct {
		Cmdline string `json:"cmdline"`
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Cmdline == "" {
		return "", fmt.Errorf("guest manifest %s has no \"cmdline\": rebuild it with `make guest`", p)
	}
	return m.Cmdline, nil
}

// floorVM returns the VM config of one floor boot: the shim's VM config
// (shim/sandbox.go vmConfig: binary, vCPUs, memory, kernel, command line,
// accelerator, user network with the same forwards, agent channel) with
// the floor initramfs instead of the guest's.
func (b *Bench) floorVM(name, stateDir string) *vmm.Config {
	h := b.shimCfg.Hypervisor
	vc := &vmm.Config{
		Name:      name,
		StateDir:  stateDir,
		Binary:    h.Binary,
		VCPUs:     h.VCPUs,
		MemoryMiB: h.MemoryMiB,
		Kernel:    h.KernelPath,
		Initrd:    b.floorInitrd,
		Cmdline:   b.cmdline,
		Firmware:  h.FirmwarePath,
		Accel:     b.accel,
		Network:   vmm.Network{Mode: vmm.NetworkMode(b.shimCfg.Network.Mode), Restrict: !b.shimCfg.Network.Unrestricted},
	}
	if vc.Network.Mode == vmm.NetworkUser {
		for i, f := range b.shimCfg.Network.Forwards {
			// shim.LoadConfig checked every entry is "ip:port".
			_, port, _ := net.SplitHostPort(f)
			p, _ := strconv.Atoi(port)
			vc.Network.Forwards = append(vc.Network.Forwards, vmm.Forward{
				GuestIP:   fmt.Sprintf("10.0.2.%d", 100+i),
				GuestPort: p,
				Command:   []string{b.cfg.ShimBinary, shim.ForwardCommand, f},
			})
		}
	}
	switch transport.Resolve(transport.Kind(b.shimCfg.Agent.Transport)) {
	case transport.KindVsock:
		vc.Agent = vmm.Agent{Kind: vmm.AgentVsock, GuestCID: 3 + uint32(os.Getpid())%(1<<20)}
	default:
		vc.Agent = vmm.Agent{Kind: vmm.AgentVirtioSerial, SocketPath: filepath.Join(stateDir, "agent.sock")}
	}
	return vc
}

// runFloor boots the floor VM once and measures QEMU exec to exit.
func (b *Bench) runFloor(ctx context.Context, i int) (*FloorSample, error) {
	dir := filepath.Join(b.cfg.WorkDir, fmt.Sprintf("floor-%d", i))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create floor VM state dir: %w", err)
	}
	defer os.RemoveAll(dir)
	vc := b.floorVM(fmt.Sprintf("coffer-bench-floor-%d", i), dir)
	if err := vc.Validate(); err != nil {
		return nil, fmt.Errorf("floor VM: %w", err)
	}
	args, err := qemu.Args(vc)
	if err != nil {
		return nil, fmt.Errorf("floor VM: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, floorTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, vc.BinaryPath(), args...)
	stderr, err := os.Create(vc.StderrLogPath())
	if err != nil {
		return nil, fmt.Errorf("create floor VM stderr log: %w", err)
	}
	defer stderr.Close()
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	start := time.Now()
	console := newConsoleWatch(vc.ConsoleLogPath(), start, MarkFirmware, MarkKernel, MarkFloorInit)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start floor VM %s: %w", vc.BinaryPath(), err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	var waitErr error
	for done := false; !done; {
		console.poll(time.Now())
		select {
		case waitErr = <-exited:
			done = true
		case <-ticker.C:
		}
	}
	total := time.Since(start)
	// Lines first seen after QEMU exited were written before it exited:
	// stamp them with the exit time, not with the moment of this read.
	console.poll(start.Add(total))
	text := console.text()
	if waitErr != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("floor VM did not power off within %s (console tail: %q)", floorTimeout, tail(text, 400))
		}
		b, _ := os.ReadFile(vc.StderrLogPath())
		return nil, fmt.Errorf("floor VM: qemu: %w; stderr: %s", waitErr, strings.TrimSpace(string(b)))
	}
	if strings.Contains(text, "Kernel panic") || !strings.Contains(text, MarkFloorInit) {
		return nil, fmt.Errorf("floor VM exited without its /init powering off (a panic reboots, and -no-reboot ends QEMU): console tail: %q", tail(text, 600))
	}
	fs := &FloorSample{Total: total, Console: console.milestones()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		fs.QEMUPeak = uint64(ru.Maxrss) * 1024 // ru_maxrss is in KiB on Linux
	}
	return fs, nil
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
