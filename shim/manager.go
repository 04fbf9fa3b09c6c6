package shim

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	cshim "github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cofferhq/coffer/vmm/qemu"
)

// RuntimeName is the containerd runtime this shim implements.
const RuntimeName = "io.containerd.cc.v2"

// NewManager returns the shim manager that containerd's shim bootstrap
// (pkg/shim.RunShim) drives: it starts the long-running shim process
// (`start`), cleans up after a dead one (`delete`), and reports runtime
// info.
func NewManager() cshim.Shim { return manager{} }

type manager struct{}

// Name returns the runtime name, io.containerd.cc.v2.
func (manager) Name() string { return RuntimeName }

// Start launches the shim server process for a container, or returns the
// address of the pod's running shim when the container joins a pod (CRI's
// sandbox-id annotation): one shim, and one VM, per pod.
func (manager) Start(ctx context.Context, params *bootapi.BootstrapParams) (_ *bootapi.BootstrapResult, retErr error) {
	id := params.GetInstanceID()
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	bundle, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	spec, err := readSpec(bundle)
	if err != nil {
		return nil, err
	}
	group := sandboxID(id, spec)

	socketDir := params.GetSocketDir()
	if socketDir == "" {
		socketDir = defaultSocketDir
	}
	address, err := cshim.CreateSocketAddress(ctx, socketDir, params.GetContainerdGrpcAddress(), group, false)
	if err != nil {
		return nil, err
	}
	result := &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc", Address: address}
	socket, err := cshim.NewSocket(address)
	if err != nil {
		if !cshim.SocketEaddrinuse(err) {
			return nil, fmt.Errorf("create shim socket: %w", err)
		}
		if cshim.CanConnect(address) {
			// The pod's shim is already serving: join it.
			return result, nil
		}
		if err := cshim.RemoveSocket(address); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale shim socket: %w", err)
		}
		if socket, err = cshim.NewSocket(address); err != nil {
			return nil, fmt.Errorf("create shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			socket.Close()
			_ = cshim.RemoveSocket(address)
		}
	}()
	f, err := socket.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()

	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", params.GetContainerdGrpcAddress()}
	if params.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = bundle
	cmd.Env = os.Environ()
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	goruntime.LockOSThread()
	err = cmd.Start()
	goruntime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("start shim process: %w", err)
	}
	go cmd.Wait()
	if err := cshim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		return nil, fmt.Errorf("adjust shim OOM score: %w", err)
	}
	if err := writeSandboxRecord(bundle, ns, group); err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	return result, nil
}

// defaultSocketDir is where containerd puts shim sockets when the
// bootstrap parameters name no directory.
const defaultSocketDir = "/run/containerd/s"

// sandboxRecord is written into each bundle so that `delete` after a shim
// crash finds the VM state directory.
type sandboxRecord struct {
	Namespace string `json:"namespace"`
	SandboxID string `json:"sandbox_id"`
	StateDir  string `json:"state_dir"`
}

const sandboxRecordFile = "cc-sandbox.json"

func writeSandboxRecord(bundle, ns, id string) error {
	b, _ := json.Marshal(sandboxRecord{Namespace: ns, SandboxID: id, StateDir: sandboxStateDir(ns, id)})
	if err := os.WriteFile(filepath.Join(bundle, sandboxRecordFile), b, 0o600); err != nil {
		return fmt.Errorf("write sandbox record: %w", err)
	}
	return nil
}

// Stop runs as `containerd-shim-cc-v2 delete` when containerd lost its
// connection to a task's shim: after the shim died or failed to start, and
// also after a normal task delete of a container whose pod's shim (and VM)
// still serves other containers. It reports the container as killed. When
// the pod's shim is still serving, the VM is its business and is left
// alone; otherwise Stop kills the VM the dead shim left (normally already
// gone by Pdeathsig) and removes its sockets and state directory.
func (manager) Stop(ctx context.Context, id string) (cshim.StopStatus, error) {
	bundle, err := os.Getwd()
	if err != nil {
		return cshim.StopStatus{}, err
	}
	status := cshim.StopStatus{ExitedAt: time.Now(), ExitStatus: 128 + int(syscall.SIGKILL)}
	address := shimAddress(ctx, bundle, id)
	if address != "" && cshim.CanConnect(address) {
		log.G(ctx).WithField("address", address).Debug("the pod's shim still serves: leaving its VM alone")
		return status, nil
	}
	stateDir := ""
	if b, err := os.ReadFile(filepath.Join(bundle, sandboxRecordFile)); err == nil {
		var rec sandboxRecord
		if json.Unmarshal(b, &rec) == nil {
			stateDir = rec.StateDir
		}
	}
	if stateDir == "" {
		ns, _ := namespaces.Namespace(ctx)
		var spec *specs.Spec
		if s, err := readSpec(bundle); err == nil {
			spec = s
		}
		stateDir = sandboxStateDir(ns, sandboxID(id, spec))
	}
	if address != "" {
		if err := cshim.RemoveSocket(address); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.G(ctx).WithError(err).Warn("remove the dead shim's socket")
		}
	}
	if err := qemu.Cleanup(stateDir); err != nil {
		log.G(ctx).WithError(err).Warn("clean up the VM")
	}
	if err := os.RemoveAll(stateDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).Warn("remove VM state dir")
	}
	return status, nil
}

// Info reports the runtime's name and version.
func (manager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	return &types.RuntimeInfo{
		Name:    RuntimeName,
		Version: &types.RuntimeVersion{Version: Version},
	}, nil
}

// shimAddress is the ttrpc address of the shim serving container id's pod,
// derived exactly as Start derived it: from the socket directory containerd
// gave (recorded by pkg/shim in the bundle's "socket-dir" link),
// containerd's gRPC address (the -address flag) and the sandbox ID. It
// returns "" when it cannot be derived.
func shimAddress(ctx context.Context, bundle, id string) string {
	socketDir, _ := os.Readlink(filepath.Join(bundle, "socket-dir"))
	if socketDir == "" {
		socketDir = defaultSocketDir
	}
	grpcAddress := ""
	if f := flag.Lookup("address"); f != nil {
		grpcAddress = f.Value.String()
	}
	var spec *specs.Spec
	if s, err := readSpec(bundle); err == nil {
		spec = s
	}
	address, err := cshim.CreateSocketAddress(ctx, socketDir, grpcAddress, sandboxID(id, spec), false)
	if err != nil {
		return ""
	}
	return address
}
