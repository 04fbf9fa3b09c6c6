package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cofferhq/coffer/shim"
	"github.com/cofferhq/coffer/vmm"
)

// runTimeout bounds one measured `ctr run`, start to exit.
const runTimeout = 3 * time.Minute

// Config says where the bench finds the environment it measures. Every
// field is required.
type Config struct {
	// Ctr is the ctr binary (build/bin/ctr).
	Ctr string
	// Address is containerd's gRPC socket; Namespace the containerd
	// namespace to run containers in.
	Address, Namespace string
	// ContainerdLog is the file receiving containerd's log at level info or
	// lower, which includes the shim's log lines.
	ContainerdLog string
	// Image is the image reference, already pulled into containerd, whose
	// registry the shim config forwards into the guest.
	Image string
	// ShimConfig is the shim config file passed with --runtime-config-path;
	// the floor VM is built from it too.
	ShimConfig string
	// ShimBinary is containerd-shim-cc-v2, named in the floor VM's network
	// forwards exactly as the shim names itself.
	ShimBinary string
	// FIFODir is ctr's --fifo-dir.
	FIFODir string
	// FloorInit is the static poweroff program (integration/bench/poweroff)
	// that becomes the floor initramfs's /init.
	FloorInit string
	// WorkDir is an existing scratch directory with a short path (VM
	// sockets live in it).
	WorkDir string
	// Runs is how many measured runs of each kind, at least 1.
	Runs int
	// RunArgs are extra `ctr run` flags placed before the image, e.g.
	// {"--annotation", "io.coffer.cc.init-data=<base64>"} for the attested
	// runs. Optional.
	RunArgs []string
}

// Bench measures container runs and floor boots in one environment.
type Bench struct {
	cfg         Config
	shimCfg     *shim.Config
	cmdline     string
	accel       vmm.Accel
	floorInitrd string
	events      *taskEvents
}

// New checks cfg, reads the shim config, writes the floor initramfs into
// WorkDir and subscribes to containerd's task events. Close releases it.
//
// Errors name what is wrong: an empty Config field or Runs < 1, the shim
// config (shim.LoadConfig's errors), a guest manifest without "cmdline", a
// missing FloorInit, or containerd's events API not answering at Address.
func New(cfg Config) (*Bench, error) {
	if cfg.Runs < 1 {
		return nil, fmt.Errorf("bench runs is %d, want at least 1", cfg.Runs)
	}
	for name, v := range map[string]string{
		"ctr": cfg.Ctr, "address": cfg.Address, "namespace": cfg.Namespace, "containerd log": cfg.ContainerdLog,
		"image": cfg.Image, "shim config": cfg.ShimConfig, "shim binary": cfg.ShimBinary, "fifo dir": cfg.FIFODir,
		"floor init": cfg.FloorInit, "work dir": cfg.WorkDir,
	} {
		if v == "" {
			return nil, fmt.Errorf("bench config: %s is empty, want a value", name)
		}
	}
	sc, err := shim.LoadConfig(cfg.ShimConfig)
	if err != nil {
		return nil, err
	}
	cmdline, err := guestCmdline(sc)
	if err != nil {
		return nil, err
	}
	b := &Bench{cfg: cfg, shimCfg: sc, cmdline: cmdline, accel: vmm.ResolveAccel(vmm.Accel(sc.Hypervisor.Accel))}
	b.floorInitrd = filepath.Join(cfg.WorkDir, "floor-initrd.img")
	if err := writeFloorInitrd(b.floorInitrd, cfg.FloorInit); err != nil {
		return nil, err
	}
	if b.events, err = watchTaskEvents(cfg.Address, cfg.Namespace); err != nil {
		return nil, err
	}
	return b, nil
}

// Close ends the event subscription.
func (b *Bench) Close() { b.events.Close() }

// Accel is the accelerator both the shim's VMs and the floor VMs use.
func (b *Bench) Accel() vmm.Accel { return b.accel }

// Results holds every measured sample.
type Results struct {
	// Runs are the measured container runs, in order.
	Runs []*RunSample
	// Floors are the measured floor boots, in order.
	Floors []*FloorSample
	// FloorInitrdBytes is the size of the floor initramfs.
	FloorInitrdBytes int64
	// GuestInitrdBytes is the size of the real guest initramfs.
	GuestInitrdBytes int64
	// MemoryMiB and VCPUs size both kinds of VM.
	MemoryMiB, VCPUs int
	// Accel is the accelerator both kinds of VM used.
	Accel vmm.Accel
}

// Run does one unmeasured warm-up of each kind, then Runs measured floor
// boots and container runs, interleaved (floor 1, run 1, floor 2, ...) so
// that background load shifts both alike. It prints one progress line per
// boot or run to progress. Any failed run is an error: a run that fails
// has no meaningful timing.
func (b *Bench) Run(ctx context.Context, progress io.Writer) (*Results, error) {
	res := &Results{
		MemoryMiB: b.shimCfg.Hypervisor.MemoryMiB,
		VCPUs:     b.shimCfg.Hypervisor.VCPUs,
		Accel:     b.accel,
	}
	if st, err := os.Stat(b.floorInitrd); err == nil {
		res.FloorInitrdBytes = st.Size()
	}
	if st, err := os.Stat(b.shimCfg.Hypervisor.InitrdPath); err == nil {
		res.GuestInitrdBytes = st.Size()
	}
	for i := 0; i <= b.cfg.Runs; i++ {
		label := fmt.Sprintf("run %d/%d", i, b.cfg.Runs)
		if i == 0 {
			label = "warm-up (not counted)"
		}
		f, err := b.runFloor(ctx, i)
		if err != nil {
			return nil, fmt.Errorf("%s: bare-VM floor: %w", label, err)
		}
		rctx, cancel := context.WithTimeout(ctx, runTimeout)
		r, err := b.runContainer(rctx, fmt.Sprintf("bench-%d", i))
		cancel()
		if err != nil {
			if errors.Is(rctx.Err(), context.DeadlineExceeded) {
				err = fmt.Errorf("%w (the run did not finish within %s)", err, runTimeout)
			}
			return nil, fmt.Errorf("%s: %w", label, err)
		}
		if err := b.events.failure(); err != nil {
			return nil, fmt.Errorf("containerd task event subscription ended: %w", err)
		}
		fmt.Fprintf(progress, "    %-22s floor %s   ctr run -> first output %s (boot %s, pull %s)\n", label,
			secs(f.Total), secs(r.FirstOutput), secs(r.AgentAnswered-r.QEMULaunched), secs(r.PullDone-r.AgentAnswered))
		if i == 0 {
			continue
		}
		res.Floors = append(res.Floors, f)
		res.Runs = append(res.Runs, r)
	}
	return res, nil
}
