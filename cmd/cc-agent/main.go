// Command cc-agent is PID 1 of a Coffer guest: it prepares the system,
// then serves the agent API to the shim over vsock or virtio-serial.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"

	"github.com/cofferhq/coffer/guest/agent"
	"github.com/cofferhq/coffer/guest/cdh"
	"github.com/cofferhq/coffer/guest/cdh/apiserver"
	"github.com/cofferhq/coffer/guest/confidential"
	"github.com/cofferhq/coffer/guest/image"
	"github.com/cofferhq/coffer/guest/policy"
	"github.com/cofferhq/coffer/guest/sysinit"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/forward"
	"github.com/cofferhq/coffer/vmm/bootlog"
)

// version is cc-agent's version, reported by Health.
const version = "v0.1.0"

// memoryLimit is the Go runtime's soft memory limit for cc-agent, 24 MiB
// (runtime/debug.SetMemoryLimit: heap, stacks and runtime metadata; not the
// binary's mapped text). The guest is small and the agent shares it with
// the workload: with the limit the collector runs harder as the agent's
// heap nears it (an image pull, policy compilation at start and at
// InitSandbox) instead of letting the heap double under GOGC=100, and the
// scavenger returns freed pages to the guest sooner. It is soft: the
// agent never fails for exceeding it. A GOMEMLIMIT environment variable
// (from the kernel command line) overrides it.
const memoryLimit = 24 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	fmt.Println(bootlog.AgentStarting)
	if err := run(); err != nil {
		fmt.Printf("%s %v\n", bootlog.AgentFatal, err)
	}
	// PID 1 must never exit (the kernel would panic): power off instead.
	time.Sleep(200 * time.Millisecond)
	if err := sysinit.PowerOff(); err != nil {
		fmt.Printf("%s power off: %v\n", bootlog.AgentFatal, err)
	}
	select {}
}

func run() error {
	if os.Getpid() != 1 {
		return fmt.Errorf("cc-agent must run as PID 1 inside a Coffer guest (it is PID %d)", os.Getpid())
	}
	logger := logrus.New()
	logger.SetOutput(os.Stdout)
	logger.SetFormatter(&logrus.TextFormatter{DisableColors: true, FullTimestamp: true})
	entry := logrus.NewEntry(logger).WithField("component", "cc-agent")
	ctx := log.WithLogger(context.Background(), entry)

	if !sysinit.RootSwitched() {
		// Returns only on error; on success init runs again on a tmpfs root.
		return sysinit.SwitchRoot(ctx)
	}
	info, err := sysinit.Setup(ctx, sysinit.Options{})
	if err != nil {
		return err
	}
	if info.Cmdline.Debug {
		logger.SetLevel(logrus.DebugLevel)
	}
	// Setup already logged module failures, modules without a device and
	// a failed configfs mount, once each.
	l, kind, err := listen(ctx, info.Cmdline.Transport)
	if err != nil {
		return err
	}
	pol, err := policy.LoadDefault()
	if err != nil {
		return fmt.Errorf("load the built-in agent policy: %w", err)
	}
	fwd := forwardDialer(l)
	hub := confidential.New(confidential.Options{
		Log:            entry.WithField("component", "cc-agent/confidential"),
		ServeResources: serveResources,
		Dial:           fwd.DialContext,
	})
	a, err := agent.New(agent.Options{
		Policy:       pol,
		Confidential: hub,
		Puller:       agent.PullerFunc(image.Pull),
		PowerOff:     func() { _ = sysinit.PowerOff() },
		Dial:         fwd.DialContext,
		Version:      version,
		Log:          entry,
	})
	if err != nil {
		return err
	}
	fmt.Printf("%s on %s (kernel %s)\n", bootlog.AgentListening, kind, info.KernelRelease)
	return a.Serve(ctx, l)
}

// serveResources serves KBS resources to the pod's workloads on
// 127.0.0.1:8006 (guest/cdh/apiserver), which every container reaches
// because containers share the guest's network namespace.
func serveResources(ctx context.Context, rg cdh.ResourceGetter) error {
	ln, err := net.Listen("tcp", apiserver.DefaultAddress)
	if err != nil {
		return fmt.Errorf("workload resource endpoint: %w", err)
	}
	return apiserver.Serve(ctx, ln, rg)
}

// listen opens the agent transport the kernel command line names
// (cc.transport), or else virtio-serial when the host attached the agent
// port and vsock otherwise.
func listen(ctx context.Context, t sysinit.Transport) (net.Listener, string, error) {
	kind := t.Kind
	if kind == "" {
		kind = sysinit.TransportVsock
		if hasVirtioPort(transport.VirtioSerialPortName) {
			kind = sysinit.TransportVirtioSerial
		}
	}
	switch kind {
	case sysinit.TransportVirtioSerial:
		name := t.PortName
		if name == "" {
			name = transport.VirtioSerialPortName
		}
		l, err := transport.ListenVirtioSerial(ctx, name)
		return l, "virtio-serial port " + name, err
	default:
		port := t.Port
		if port == 0 {
			port = transport.DefaultVsockPort
		}
		l, err := transport.ListenVsock(port)
		return l, fmt.Sprintf("vsock port %d", port), err
	}
}

// forwardDialer is the dialer of the image puller and the attestation
// agent: addresses the host's dial rewrites turned into forward addresses
// (network.mode = "none" with network.forwards) are opened over the agent
// transport l, as a yamux stream toward the host on virtio-serial and as
// a vsock connection to the host otherwise; any other address over TCP.
func forwardDialer(l net.Listener) *forward.Dialer {
	d := &forward.Dialer{Open: transport.DialHostVsock, Net: net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}}
	if o, ok := l.(transport.HostOpener); ok {
		d.Open = o.OpenHost
	}
	return d
}

// hasVirtioPort reports whether a virtio-serial port with this name exists.
func hasVirtioPort(name string) bool {
	names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, n := range names {
		if b, err := os.ReadFile(n); err == nil && strings.TrimSpace(string(b)) == name {
			return true
		}
	}
	return false
}
