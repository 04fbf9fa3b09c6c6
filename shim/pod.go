package shim

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	ccevents "github.com/cofferhq/coffer/api/events/v1"
	"github.com/cofferhq/coffer/guest/sysinit"
	"github.com/cofferhq/coffer/vmm"
	"github.com/cofferhq/coffer/vmm/tapnet"
)

// CRI annotations on the OCI spec (containerd internal/cri/annotations).
const (
	// AnnotationContainerType is "sandbox" on a pod's pause container and
	// "container" on its app containers.
	AnnotationContainerType = "io.kubernetes.cri.container-type"
	// AnnotationSandboxMemory is the sum of the pod's container memory
	// limits, bytes, on the sandbox spec.
	AnnotationSandboxMemory = "io.kubernetes.cri.sandbox-memory"
	// AnnotationSandboxCPUQuota and AnnotationSandboxCPUPeriod are the
	// pod's summed CPU quota and its period, microseconds.
	AnnotationSandboxCPUQuota  = "io.kubernetes.cri.sandbox-cpu-quota"
	AnnotationSandboxCPUPeriod = "io.kubernetes.cri.sandbox-cpu-period"
)

// isPodSandbox reports whether spec is a CRI pod's sandbox (pause)
// container. Coffer never pulls or runs the pause image: the pod's VM is
// the sandbox, and the shim plays the pause process (see pausePID).
func isPodSandbox(spec *specs.Spec) bool {
	return spec != nil && spec.Annotations[AnnotationContainerType] == "sandbox"
}

// podNetNS is the network namespace CNI prepared for the pod (the path of
// the sandbox spec's network namespace), "" for a host-network pod or a
// plain container.
func podNetNS(spec *specs.Spec) string {
	if spec == nil || spec.Linux == nil {
		return ""
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}

// podSize is the VM size for a pod: the configured base plus the pod's
// summed container limits (CRI sandbox annotations), capped at
// hypervisor.max_vcpus / max_memory_mib. A pod without limits gets the
// base size. The agent enforces each container's own limits with cgroups
// inside the guest.
func podSize(cfg *Config, spec *specs.Spec) (vcpus, memoryMiB int) {
	h := cfg.Hypervisor
	vcpus, memoryMiB = h.VCPUs, h.MemoryMiB
	if spec == nil {
		return vcpus, memoryMiB
	}
	if b, err := strconv.ParseInt(spec.Annotations[AnnotationSandboxMemory], 10, 64); err == nil && b > 0 {
		memoryMiB += int((b + 1<<20 - 1) >> 20)
	}
	q, qerr := strconv.ParseInt(spec.Annotations[AnnotationSandboxCPUQuota], 10, 64)
	p, perr := strconv.ParseInt(spec.Annotations[AnnotationSandboxCPUPeriod], 10, 64)
	if qerr == nil && perr == nil && q > 0 && p > 0 {
		vcpus += int((q + p - 1) / p)
	}
	return min(vcpus, h.MaxVCPUs), min(memoryMiB, h.MaxMemoryMiB)
}

// podNetwork attaches the VM to the pod network CNI set up in netns: a
// tap device in that netns joined to the pod's veth by TC redirects
// (Kata's model), handed to the VMM as an open file (QEMU inherits it,
// Cloud Hypervisor receives it with vm.add-net). The guest gets the pod's
// addresses, routes and DNS through fw_cfg on QEMU, and on the kernel
// command line (cc.net=, replacing the guest build's) on Cloud
// Hypervisor, which has no fw_cfg. Without /dev/net/tun it keeps the
// configured network (QEMU: user mode; Cloud Hypervisor: none) and returns
// a warning to publish.
//
// Errors: errdefs.ErrNotImplemented for Cloud Hypervisor with tee snp or
// tdx, whose measurement covers the command line (see
// podNetworkMeasured); tapnet.Setup's errors; an over-long command line.
func podNetwork(ctx context.Context, cfg *Config, vc *vmm.Config, netns, resolvConf string) (*tapnet.Endpoint, string, error) {
	clh := cfg.Hypervisor.VMM == string(vmm.KindCloudHypervisor)
	if clh {
		if err := podNetworkMeasured(vc.TEE.Kind); err != nil {
			return nil, "", fmt.Errorf("attach the VM to the pod network %s: %w", netns, err)
		}
	}
	ep, err := tapnet.Setup(ctx, tapnet.Options{NetNSPath: netns})
	if err != nil {
		var tun *tapnet.TunUnavailableError
		if errors.As(err, &tun) {
			if clh {
				// No NIC: drop the guest build's cc.net, or the guest
				// would wait for an interface and fail its boot.
				vc.Network = vmm.Network{Mode: vmm.NetworkNone}
				vc.Cmdline, _ = setNetParam(vc.Cmdline, nil)
				return nil, fmt.Sprintf("the pod network cannot be attached (%v): the VM has no network at all (Cloud Hypervisor has no user-mode networking), so the guest can reach no registry or KBS", err), nil
			}
			return nil, fmt.Sprintf("the pod network cannot be attached (%v): the VM uses user-mode networking, so the pod IP, routes and DNS CNI prepared are not the guest's", err), nil
		}
		return nil, "", fmt.Errorf("attach the VM to the pod network %s: %w", netns, err)
	}
	if resolvConf != "" {
		addDNS(&ep.Guest, resolvConf)
	}
	if clh {
		cmdline, err := setNetParam(vc.Cmdline, &ep.Guest)
		if err != nil {
			if cerr := ep.Close(); cerr != nil {
				log.G(ctx).WithError(cerr).Warn("undo the pod network setup")
			}
			return nil, "", fmt.Errorf("attach the VM to the pod network %s: %w", netns, err)
		}
		vc.Cmdline = cmdline
	} else {
		vc.FWCfg = append(vc.FWCfg, vmm.FWCfgEntry{Name: sysinit.FWCfgNet, String: ep.Guest.String()})
	}
	vc.Network = vmm.Network{Mode: vmm.NetworkTap, Tap: ep.VMMTap()}
	return ep, "", nil
}

// podNetworkMeasured refuses a Cloud Hypervisor pod network under a TEE
// whose launch measurement covers the kernel command line. Cloud
// Hypervisor has no fw_cfg, so the pod's addresses travel in cc.net= on
// the command line; under tdx (TDVF measures the command line into
// RTMR[2]) and snp (the IGVM image decides what of the command line is
// measured) every pod would then have its own measurement, and a KBS
// reference value could not cover a guest build. QEMU keeps the addresses
// in fw_cfg, outside the measurement. Returns nil for tee none; the sim
// TEE never reaches here on Cloud Hypervisor (refused at config load).
func podNetworkMeasured(tee vmm.TEEKind) error {
	var what string
	switch tee {
	case vmm.TEETDX:
		what = "the TD firmware measures it into an RTMR, RTMR[2] with TDVF"
	case vmm.TEESNP:
		what = "the IGVM image may measure it"
	default:
		return nil
	}
	return fmt.Errorf("the pod's addresses would go on the kernel command line (cc.net=), since Cloud Hypervisor has no fw_cfg, and with tee %q that is part of the attested launch (%s): every pod would get its own measurement and no KBS reference value could cover them; use vmm \"qemu\" for CRI pods with a TEE (it passes the addresses in fw_cfg, outside the measurement): %w", tee, what, errdefs.ErrNotImplemented)
}

// maxCmdline is the longest kernel command line, bytes, that an x86-64
// Linux guest takes (COMMAND_LINE_SIZE is 2048 with the NUL).
const maxCmdline = 2047

// setNetParam returns cmdline with every cc.net word (the guest build's
// default names the QEMU user-mode address) removed and, when nc is not
// nil, one cc.net=<nc> added at the end. Words are split at spaces outside
// double quotes, as the kernel does, and kept verbatim. Errors: the result
// is longer than maxCmdline (errdefs.ErrInvalidArgument), naming both
// lengths.
func setNetParam(cmdline string, nc *sysinit.NetConfig) (string, error) {
	var words []string
	for _, w := range cmdlineWords(cmdline) {
		key, _, _ := strings.Cut(strings.ReplaceAll(w, `"`, ""), "=")
		if key != sysinit.KeyNet {
			words = append(words, w)
		}
	}
	if nc != nil {
		words = append(words, sysinit.KeyNet+"="+nc.String())
	}
	out := strings.Join(words, " ")
	if len(out) > maxCmdline {
		return "", fmt.Errorf("the kernel command line with the pod's %s=%s is %d bytes, more than the %d a guest kernel takes: shorten hypervisor.kernel_cmdline, or give the pod fewer routes, nameservers and search domains: %w",
			sysinit.KeyNet, nc, len(out), maxCmdline, errdefs.ErrInvalidArgument)
	}
	return out, nil
}

// cmdlineWords splits a kernel command line at spaces and tabs outside
// double quotes, keeping the quotes.
func cmdlineWords(s string) []string {
	var words []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			cur.WriteRune(r)
		case (r == ' ' || r == '\t' || r == '\n') && !quoted:
			if cur.Len() > 0 {
				words = append(words, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		words = append(words, cur.String())
	}
	return words
}

// addDNS copies the pod's resolv.conf nameservers and search domains
// (the file CRI bind-mounts at /etc/resolv.conf) into the guest config.
func addDNS(nc *sysinit.NetConfig, resolvConf string) {
	servers, search := parseResolvConf(resolvConf)
	for i, s := range servers {
		if i == 0 && !nc.DNS.IsValid() {
			nc.DNS = s
			continue
		}
		nc.MoreDNS = append(nc.MoreDNS, s)
	}
	nc.Search = append(nc.Search, search...)
}

// resolvConfSource is the host file CRI bind-mounts at /etc/resolv.conf.
func resolvConfSource(spec *specs.Spec) string {
	for _, m := range spec.Mounts {
		if m.Destination == "/etc/resolv.conf" {
			return m.Source
		}
	}
	return ""
}

// pausePID is the PID the shim reports for a pod's sandbox container: the
// VM's, since the VM is the sandbox.
func pausePID(sb *sandbox) uint32 { return uint32(sb.vm.Pid()) }

// killPause ends the virtual pause process as a real pause would: SIGINT,
// SIGTERM and SIGKILL end it (exit status 0 for the first two, 137 for
// SIGKILL); other signals are ignored.
func (s *service) killPause(p *process, sig uint32) {
	var status uint32
	switch syscall.Signal(sig) {
	case syscall.SIGINT, syscall.SIGTERM:
	case syscall.SIGKILL:
		status = 128 + uint32(syscall.SIGKILL)
	default:
		return
	}
	s.exitPause(p, status)
}

// exitPause marks the pause process exited and publishes its exit, once.
func (s *service) exitPause(p *process, status uint32) {
	p.mu.Lock()
	if p.status == task.Status_STOPPED {
		p.mu.Unlock()
		return
	}
	p.status = task.Status_STOPPED
	p.exitStatus = status
	p.exitedAt = time.Now()
	pid, at := p.pid, p.exitedAt
	close(p.exited)
	p.mu.Unlock()
	s.send(runtime.TaskExitEventTopic, &eventstypes.TaskExit{
		ContainerID: p.containerID, ID: p.containerID, Pid: pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at),
	})
}

// warn publishes a /cc/warning event and logs it.
func (s *service) warn(ctx context.Context, containerID, reason, msg string) {
	log.G(ctx).WithField("container", containerID).Warn(msg)
	s.send(ccevents.TopicWarning, &ccevents.Warning{ContainerId: containerID, Reason: reason, Message: msg})
}

// parseResolvConf reads the nameserver and search lines of the
// resolv.conf at path (resolv.conf(5)); unreadable files and bad lines
// give nothing. At most 3 nameservers are kept, as the resolver does.
func parseResolvConf(path string) (servers []netip.Addr, search []string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if a, err := netip.ParseAddr(f[1]); err == nil && len(servers) < 3 {
				servers = append(servers, a)
			}
		case "search", "domain":
			search = f[1:]
		}
	}
	return servers, search
}

// podOptions size and connect a pod's VM; zero values mean the config's
// base size and user-mode networking.
type podOptions struct {
	vcpus, memoryMiB int
	// netns is the pod network namespace CNI prepared ("" for none).
	netns string
	// resolvConf is the host file of the pod's /etc/resolv.conf.
	resolvConf string
}

// podOptionsFor reads a pod's sizing and network from its sandbox spec.
func podOptionsFor(cfg *Config, spec *specs.Spec) podOptions {
	o := podOptions{}
	o.vcpus, o.memoryMiB = podSize(cfg, spec)
	if isPodSandbox(spec) {
		o.netns = podNetNS(spec)
		o.resolvConf = resolvConfSource(spec)
	}
	return o
}

// createPause creates a CRI pod's sandbox container: it boots the pod's
// VM, sized for the pod and attached to its network, and records the
// shim-side pause process. Nothing is pulled, inside or outside the guest.
func (s *service) createPause(ctx context.Context, cfg *Config, r *taskAPI.CreateTaskRequest, spec *specs.Spec, idata *podInitData) (*taskAPI.CreateTaskResponse, error) {
	sb, err := s.ensureSandbox(ctx, cfg, sandboxID(r.ID, spec), idata, podOptionsFor(cfg, spec))
	if err != nil {
		return nil, toGRPC(fmt.Errorf("create pod sandbox %s: %w", r.ID, err))
	}
	p := &process{
		containerID: r.ID,
		stdio:       stdioPaths{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		status:      task.Status_CREATED,
		exited:      make(chan struct{}),
		pid:         pausePID(sb),
	}
	s.mu.Lock()
	s.containers[r.ID] = &container{id: r.ID, bundle: r.Bundle, init: p, execs: map[string]*process{}, pause: true}
	s.mu.Unlock()
	s.send(runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs,
		IO:  &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Pid: p.pid,
	})
	return &taskAPI.CreateTaskResponse{Pid: p.pid}, nil
}
