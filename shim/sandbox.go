package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/google/go-containerregistry/pkg/name"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/cofferhq/coffer/initdata"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/forward"
	"github.com/cofferhq/coffer/vmm"
	"github.com/cofferhq/coffer/vmm/bootlog"
	"github.com/cofferhq/coffer/vmm/cloudhypervisor"
	"github.com/cofferhq/coffer/vmm/qemu"
	"github.com/cofferhq/coffer/vmm/tapnet"
)

// StateRoot holds one directory per sandbox VM: QMP and agent sockets,
// console.log, qemu.pid. Paths are short because unix socket paths are
// limited to 108 bytes.
const StateRoot = "/run/cc"

// AnnotationSandboxID is the OCI spec annotation CRI sets on every
// container of a pod; containers with the same value share one VM.
const AnnotationSandboxID = "io.kubernetes.cri.sandbox-id"

// guestForwardBase is the last octet of the first guest address a
// network.forwards entry gets (10.0.2.100, 10.0.2.101, ...).
const guestForwardBase = 100

// sandboxID is the VM a container belongs to: its pod, or itself.
func sandboxID(containerID string, spec *specs.Spec) string {
	if spec != nil && spec.Annotations[AnnotationSandboxID] != "" {
		return spec.Annotations[AnnotationSandboxID]
	}
	return containerID
}

// sandboxStateDir is the state directory of sandbox id in namespace ns.
func sandboxStateDir(ns, id string) string {
	sum := sha256.Sum256([]byte(ns + "/" + id))
	return filepath.Join(StateRoot, hex.EncodeToString(sum[:8]))
}

// sandbox is one running VM and the agent connection to it.
type sandbox struct {
	id       string
	stateDir string
	vm       vmm.VMM
	dialer   transport.Dialer
	client   *ttrpc.Client
	agent    agent.TTRPCAgentService
	registry *agent.RegistryConfig
	// attesting is the container whose create the guest attests for.
	attesting attestationTarget
	// podNet is the pod network attachment (tap + TC redirect), closed
	// after the VM exits; nil with user-mode networking.
	podNet *tapnet.Endpoint
	// netWarning says why a pod network could not be attached.
	netWarning string

	// ctx ends when the sandbox is stopped.
	ctx    context.Context
	cancel context.CancelFunc

	// Boot phase durations, for logs and `make bench`.
	vmStarted  time.Duration
	agentReady time.Duration
}

// guestManifest is the part of build/guest/manifest.json the shim reads.
type guestManifest struct {
	Cmdline string `json:"cmdline"`
}

// kernelCmdline is the configured command line, or the guest build's.
func kernelCmdline(cfg *Config) (string, error) {
	if cfg.Hypervisor.KernelCmdline != "" {
		return cfg.Hypervisor.KernelCmdline, nil
	}
	p := filepath.Join(cfg.Hypervisor.GuestDir, "manifest.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("read guest manifest %s (for the default kernel command line): %w: run `make guest` or set hypervisor.kernel_cmdline", p, err)
	}
	var m guestManifest
	if err := json.Unmarshal(b, &m); err != nil || m.Cmdline == "" {
		return "", fmt.Errorf("guest manifest %s has no \"cmdline\": rebuild it with `make guest`", p)
	}
	return m.Cmdline, nil
}

// vmConfig turns the shim config into the VMM's typed config.
func vmConfig(cfg *Config, id, stateDir string, kind transport.Kind, idata *podInitData) (*vmm.Config, error) {
	cmdline, err := kernelCmdline(cfg)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("locate the shim binary for guest forwards: %w", err)
	}
	h := cfg.Hypervisor
	vc := &vmm.Config{
		Name:      "coffer-" + id,
		StateDir:  stateDir,
		Binary:    h.Binary,
		VCPUs:     h.VCPUs,
		MemoryMiB: h.MemoryMiB,
		Kernel:    h.KernelPath,
		Initrd:    h.InitrdPath,
		Cmdline:   cmdline,
		Firmware:  h.FirmwarePath,
		Accel:     vmm.Accel(h.Accel),
		TEE:       teeConfig(cfg, idata),
		Network:   vmm.Network{Mode: vmm.NetworkMode(cfg.Network.Mode)},
	}
	if cfg.Network.Mode == "user" {
		// Restrict is a user-network setting; mode "none" has no network.
		vc.Network.Restrict = !cfg.Network.Unrestricted
	}
	if cfg.Network.Mode == "user" && h.VMM == string(vmm.KindQEMU) {
		for i, f := range cfg.Network.Forwards {
			_, port, _ := net.SplitHostPort(f)
			p, _ := strconv.Atoi(port)
			vc.Network.Forwards = append(vc.Network.Forwards, vmm.Forward{
				GuestIP:   fmt.Sprintf("10.0.2.%d", guestForwardBase+i),
				GuestPort: p,
				Command:   []string{exe, ForwardCommand, f},
			})
		}
	}
	switch kind {
	case transport.KindHybridVsock:
		vc.Agent = vmm.Agent{Kind: vmm.AgentHybridVsock, GuestCID: guestCID(stateDir), SocketPath: filepath.Join(stateDir, "vsock.sock")}
	case transport.KindVsock:
		vc.Agent = vmm.Agent{Kind: vmm.AgentVsock, GuestCID: guestCID(stateDir)}
	default:
		vc.Agent = vmm.Agent{Kind: vmm.AgentVirtioSerial, SocketPath: filepath.Join(stateDir, "agent.sock")}
	}
	return vc, nil
}

// guestCID derives a vsock CID (3 .. 2^31) from the state directory.
func guestCID(stateDir string) uint32 {
	sum := sha256.Sum256([]byte(stateDir))
	return 3 + (uint32(sum[0])<<24|uint32(sum[1])<<16|uint32(sum[2])<<8|uint32(sum[3]))%(1<<31-3)
}

// newVMM returns the configured VMM for vc: QEMU, or Cloud Hypervisor
// (which takes the SNP IGVM image beside the common config).
func newVMM(cfg *Config, vc *vmm.Config) (vmm.VMM, error) {
	if cfg.Hypervisor.VMM != string(vmm.KindCloudHypervisor) {
		return qemu.New(vc)
	}
	if vc.TEE.Kind == vmm.TEETDX && vc.TEE.TDX != nil && len(vc.TEE.TDX.MRConfigID) > 0 {
		return nil, fmt.Errorf("the pod has init-data, but Cloud Hypervisor cannot set TDX MRCONFIGID to bind it at launch: use vmm \"qemu\" for TDX pods with init-data: %w", errdefs.ErrNotImplemented)
	}
	return cloudhypervisor.New(&cloudhypervisor.Config{Config: *vc, IGVM: cfg.Hypervisor.IGVMPath})
}

// teeConfig binds the pod's init-data digest at launch: SNP HOST_DATA
// (32 bytes), TDX MRCONFIGID (48 bytes), sim host data (32 bytes), each
// the digest zero-padded or truncated as Trustee's verifiers expect
// (initdata.Fit). Without init-data the fields stay zero.
func teeConfig(cfg *Config, idata *podInitData) vmm.TEE {
	t := vmm.TEE{Kind: vmm.TEEKind(cfg.Hypervisor.TEE)}
	d := idata.digest()
	switch t.Kind {
	case vmm.TEESim:
		t.Sim = &vmm.SimConfig{ChainDir: cfg.Attestation.SimChainDir}
		if d != nil {
			t.Sim.HostData = initdata.Fit(d, initdata.SizeHostData)
		}
	case vmm.TEESNP:
		if d != nil {
			t.SNP = &vmm.SNPConfig{HostData: initdata.Fit(d, initdata.SizeHostData)}
		}
	case vmm.TEETDX:
		if d != nil {
			t.TDX = &vmm.TDXConfig{MRConfigID: initdata.Fit(d, initdata.SizeMRConfigID)}
		}
	}
	return t
}

// guestRegistry is the registry config sent to the guest: forwards become
// dial rewrites for the host endpoints they stand for, to their guestfwd
// address (network.mode "user") or to their forward.Address (agent-channel
// forwards, network.mode "none").
func guestRegistry(cfg *Config) (*agent.RegistryConfig, error) {
	rc := &agent.RegistryConfig{Insecure: cfg.Registry.Insecure, Endpoints: map[string]string{}}
	for _, f := range cfg.Registry.CAFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("registry.ca_files: %w", err)
		}
		rc.CaPem = append(rc.CaPem, b)
	}
	for i, f := range cfg.Network.Forwards {
		host, port, _ := net.SplitHostPort(f)
		guest := net.JoinHostPort(fmt.Sprintf("10.0.2.%d", guestForwardBase+i), port)
		if agentForwards(cfg) {
			guest = forward.Address(i)
		}
		rc.Endpoints[f] = guest
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			rc.Endpoints[net.JoinHostPort("localhost", port)] = guest
		}
	}
	return rc, nil
}

// startSandbox boots the VM for sandbox id and connects to its agent. On
// failure nothing is left running, and the error says how far the guest
// got, read from its console log.
func startSandbox(ctx context.Context, cfg *Config, ns, id string, idata *podInitData, pod podOptions) (_ *sandbox, retErr error) {
	stateDir := sandboxStateDir(ns, id)
	if err := qemu.Cleanup(stateDir); err != nil {
		log.G(ctx).WithError(err).Warn("clean up a stale VM state dir")
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create VM state dir: %w", err)
	}
	kind := transport.Resolve(transport.Kind(cfg.Agent.Transport))
	vc, err := vmConfig(cfg, id, stateDir, kind, idata)
	if err != nil {
		os.RemoveAll(stateDir)
		return nil, err
	}
	reg, err := guestRegistry(cfg)
	if err != nil {
		os.RemoveAll(stateDir)
		return nil, err
	}
	if pod.vcpus > 0 {
		vc.VCPUs, vc.MemoryMiB = pod.vcpus, pod.memoryMiB
	}
	var (
		podNet     *tapnet.Endpoint
		netWarning string
	)
	if pod.netns != "" {
		if podNet, netWarning, err = podNetwork(ctx, cfg, vc, pod.netns, pod.resolvConf); err != nil {
			os.RemoveAll(stateDir)
			return nil, err
		}
		if podNet != nil {
			// On the pod network there are no user-mode forwards: the
			// guest dials registries and the KBS by their own addresses.
			reg.Endpoints = nil
		}
	}
	vm, err := newVMM(cfg, vc)
	if err != nil {
		if podNet != nil {
			podNet.Close()
		}
		os.RemoveAll(stateDir)
		return nil, fmt.Errorf("configure VM: %w", err)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	sb := &sandbox{id: id, stateDir: stateDir, vm: vm, registry: reg, ctx: sctx, cancel: cancel, podNet: podNet, netWarning: netWarning}
	defer func() {
		if retErr != nil {
			sb.stop(context.WithoutCancel(ctx))
		}
	}()

	start := time.Now()
	if err := vm.Start(ctx); err != nil {
		return nil, fmt.Errorf("start VM: %w", err)
	}
	sb.vmStarted = time.Since(start)

	bootCtx, bootCancel := context.WithTimeout(ctx, time.Duration(cfg.Agent.BootTimeout))
	defer bootCancel()
	go func() {
		// Give up on the agent at once if the VM dies while booting.
		select {
		case <-vm.Exited():
			bootCancel()
		case <-bootCtx.Done():
		}
	}()
	if err := sb.connect(bootCtx, kind, vc, cfg.Agent.VsockPort); err != nil {
		return nil, sb.bootError(err, time.Duration(cfg.Agent.BootTimeout))
	}
	sb.agentReady = time.Since(start)
	if agentForwards(cfg) {
		if err := sb.serveForwards(ctx, cfg, kind, vc); err != nil {
			return nil, err
		}
	}
	if err := sb.initGuest(ctx, cfg, idata); err != nil {
		return nil, err
	}
	log.G(ctx).WithFields(log.Fields{
		"sandbox": id, "vm_start": sb.vmStarted, "agent_ready": sb.agentReady, "transport": kind,
	}).Info("VM booted and cc-agent answered")
	return sb, nil
}

// connect dials the agent and checks it answers Health.
func (sb *sandbox) connect(ctx context.Context, kind transport.Kind, vc *vmm.Config, port uint32) error {
	var err error
	switch kind {
	case transport.KindHybridVsock:
		sb.dialer, err = transport.ConnectHybridVsock(ctx, vc.Agent.SocketPath, port)
	case transport.KindVsock:
		sb.dialer, err = transport.ConnectVsock(ctx, vc.Agent.GuestCID, port)
	default:
		sb.dialer, err = transport.ConnectVirtioSerial(ctx, vc.Agent.SocketPath)
	}
	if err != nil {
		return err
	}
	conn, err := sb.dialer.Dial(ctx)
	if err != nil {
		return fmt.Errorf("open the agent RPC channel: %w", err)
	}
	if err := agent.WriteChannel(conn, agent.ChannelRPC); err != nil {
		conn.Close()
		return fmt.Errorf("open the agent RPC channel: %w", err)
	}
	sb.client = ttrpc.NewClient(conn)
	sb.agent = agent.NewTTRPCAgentClient(sb.client)
	for {
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = sb.agent.Health(hctx, &agent.HealthRequest{})
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("agent health check: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// vmExitGrace is how long bootError waits for QEMU to be reaped: a guest
// that dies (a kernel panic) closes the agent channel a moment before QEMU
// exits, and the error should say the VM exited, not that a read failed.
const vmExitGrace = 2 * time.Second

// bootError explains a failed boot from the VM's state and console log.
func (sb *sandbox) bootError(err error, timeout time.Duration) error {
	wait := vmExitGrace
	if errors.Is(err, context.DeadlineExceeded) {
		wait = 0
	}
	exited := false
	select {
	case <-sb.vm.Exited():
		exited = true
	case <-time.After(wait):
	}
	progress := bootlog.DescribeFile(sb.vm.ConsoleLogPath())
	if exited {
		why := "the VMM exited with status 0: the guest powered off or rebooted"
		if err := sb.vm.ExitError(); err != nil {
			why = err.Error()
		}
		return fmt.Errorf("the VM exited while booting (%s): %s", why, progress)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("cc-agent did not answer within %s (agent.boot_timeout): %s (%v)", timeout, progress, err)
	}
	return fmt.Errorf("connect to cc-agent: %v: %s", err, progress)
}

// dial opens a new raw stream connection to the agent.
func (sb *sandbox) dial(ctx context.Context) (net.Conn, error) {
	return sb.dialer.Dial(ctx)
}

// pull asks the agent to pull ref into container id's rootfs.
func (sb *sandbox) pull(ctx context.Context, id string, ref imageRef, cfg *Config) (*agent.PullImageResponse, error) {
	start := time.Now()
	resp, err := sb.agent.PullImage(ctx, &agent.PullImageRequest{
		ContainerId:  id,
		Reference:    ref.Name,
		Digest:       ref.Digest,
		LayerDigests: ref.Layers,
		Registry:     sb.registry,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("pull %s in the guest: not done within %s (agent.pull_timeout): %w", ref, time.Duration(cfg.Agent.PullTimeout), errgrpc.ToNative(err))
		}
		return nil, fmt.Errorf("pull %s in the guest: %w%s", ref, errgrpc.ToNative(err), forwardHint(ref.Name, cfg))
	}
	log.G(ctx).WithFields(log.Fields{
		"image": ref.String(), "manifest": resp.GetManifestDigest(), "bytes": resp.GetBytesFetched(), "duration": time.Since(start),
	}).Info("image pulled in the guest")
	return resp, nil
}

// removeContainer is best-effort cleanup of a half-created container.
func (sb *sandbox) removeContainer(ctx context.Context, id string) {
	if _, err := sb.agent.RemoveContainer(ctx, &agent.RemoveContainerRequest{ContainerId: id}); err != nil {
		log.G(ctx).WithError(err).Debug("remove half-created container")
	}
}

// closeAgent drops the agent connection, failing every call in flight.
func (sb *sandbox) closeAgent() {
	if sb.client != nil {
		sb.client.Close()
	}
	if sb.dialer != nil {
		sb.dialer.Close()
	}
}

// stop shuts the guest down (asking the agent first, briefly), stops the
// VM, and removes the state directory. It is safe to call more than once.
func (sb *sandbox) stop(ctx context.Context) error {
	sb.cancel()
	if sb.agent != nil {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if d, err := sb.agent.Diagnostics(sctx, &agent.DiagnosticsRequest{}); err == nil {
			log.G(ctx).WithFields(log.Fields{
				"sandbox": sb.id, "agent_rss_bytes": d.GetAgentRssBytes(), "agent_peak_rss_bytes": d.GetAgentPeakRssBytes(),
			}).Info("stopping the VM")
		}
		_, _ = sb.agent.Shutdown(sctx, &agent.ShutdownRequest{})
		cancel()
	}
	sb.closeAgent()
	err := sb.vm.Stop(ctx)
	if sb.podNet != nil {
		if nerr := sb.podNet.Close(); nerr != nil && err == nil {
			err = fmt.Errorf("detach the pod network: %w", nerr)
		}
	}
	if rerr := os.RemoveAll(sb.stateDir); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// forwardHint explains a failed pull from a registry on the host's
// loopback that network.forwards does not list: inside the guest,
// 127.0.0.1 is the guest itself.
func forwardHint(refName string, cfg *Config) string {
	r, err := name.ParseReference(refName)
	if err != nil {
		return ""
	}
	registry := r.Context().RegistryStr()
	host, _, err := net.SplitHostPort(registry)
	if err != nil {
		host = registry
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return ""
	}
	for _, f := range cfg.Network.Forwards {
		if f == registry || strings.Replace(f, "127.0.0.1", "localhost", 1) == registry {
			return ""
		}
	}
	return fmt.Sprintf(" (registry %s is on the host's loopback, which the guest cannot reach directly: add %q to network.forwards in the shim config)", registry, registry)
}
