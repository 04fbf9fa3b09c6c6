package cloudhypervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer/vmm"
	"github.com/cofferhq/coffer/vmm/cloudhypervisor/clhtest"
	"github.com/cofferhq/coffer/vmm/vmproc"
	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

// fakeVM returns a CloudHypervisor whose binary is this test binary acting
// as a fake cloud-hypervisor in mode (see clhtest.ModeEnv); changes, if any,
// edit the config first.
func fakeVM(t *testing.T, mode string, changes ...func(*Config)) (*CloudHypervisor, *Config) {
	t.Helper()
	t.Setenv(clhtest.ModeEnv, mode)
	cfg := testConfig(t)
	exe, err := os.Executable()
	require.NoError(t, err)
	cfg.Binary = exe
	for _, change := range changes {
		change(cfg)
	}
	h, err := newVM(cfg, fakeDevice(t))
	require.NoError(t, err)
	t.Cleanup(func() { h.Stop(context.Background()) })
	return h, cfg
}

func procGone(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err != nil
}

func TestStartStop(t *testing.T) {
	h, cfg := fakeVM(t, "serve")
	// Stale sockets from an earlier run must not stop Start.
	require.NoError(t, os.WriteFile(cfg.APISocketPath(), nil, 0o600))
	require.NoError(t, os.WriteFile(cfg.Agent.SocketPath, nil, 0o600))
	require.Zero(t, h.Pid())
	require.NoError(t, h.Start(testCtx(t, 10*time.Second)))
	pid := h.Pid()
	pgid, err := syscall.Getpgid(pid)
	require.NoError(t, err)
	require.Equal(t, pid, pgid, "cloud-hypervisor leads its own process group")
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	require.NoError(t, err)
	require.True(t, bytes.Contains(env, []byte(vmproc.StateDirEnv+"="+cfg.StateDir+"\x00")), "environment carries the qemu.Cleanup tag")
	_, err = os.Stat(cfg.Agent.SocketPath)
	require.True(t, os.IsNotExist(err), "the stale vsock socket was removed before launch")
	require.Equal(t, cfg.ConsoleLogPath(), h.ConsoleLogPath())
	require.ErrorIs(t, h.Start(testCtx(t, time.Second)), errdefs.ErrFailedPrecondition)

	start := time.Now()
	require.NoError(t, h.Stop(testCtx(t, 10*time.Second)))
	require.Less(t, time.Since(start), 1500*time.Millisecond, "vmm.shutdown should end it well before the kill")
	select {
	case <-h.Exited():
	default:
		t.Fatal("Exited() not closed after Stop")
	}
	require.NoError(t, h.ExitError())
	require.True(t, procGone(pid))
	_, err = os.Stat(cfg.APISocketPath())
	require.True(t, os.IsNotExist(err), "api socket removed")
	require.NoError(t, h.Stop(testCtx(t, time.Second)), "Stop is idempotent")
	require.ErrorIs(t, h.Start(testCtx(t, time.Second)), errdefs.ErrFailedPrecondition)
}

func TestStopKillsDeafVMM(t *testing.T) {
	h, _ := fakeVM(t, "deaf")
	require.NoError(t, h.Start(testCtx(t, 10*time.Second)))
	pid := h.Pid()
	start := time.Now()
	require.NoError(t, h.Stop(testCtx(t, 10*time.Second)))
	require.GreaterOrEqual(t, time.Since(start), shutdownGrace)
	require.NoError(t, h.ExitError(), "a kill by Stop is a clean exit")
	require.True(t, procGone(pid))
}

func TestStartFailures(t *testing.T) {
	t.Run("exits at once", func(t *testing.T) {
		h, cfg := fakeVM(t, "exit")
		err := h.Start(testCtx(t, 10*time.Second))
		require.ErrorContains(t, err, "cloud-hypervisor exited during start (exit status 1): Error parsing config")
		log, _ := os.ReadFile(cfg.StderrLogPath())
		require.Contains(t, string(log), "Error parsing config")
		require.ErrorContains(t, h.ExitError(), "exited unexpectedly (exit status 1)")
	})
	t.Run("boot refused", func(t *testing.T) {
		h, cfg := fakeVM(t, "fail-boot")
		err := h.Start(testCtx(t, 10*time.Second))
		var apiErr *APIError
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, http.StatusInternalServerError, apiErr.Status)
		require.ErrorContains(t, err, "start vm "+cfg.Name+": boot: cloud-hypervisor vm.boot: HTTP 500 Internal Server Error: "+clhtest.BootErrorBody)
		require.ErrorContains(t, err, "its stderr: cloud-hypervisor: Error booting VM: failed to open /dev/kvm")
		require.True(t, procGone(h.Pid()), "nothing left running after a refused boot")
		_, serr := os.Stat(cfg.APISocketPath())
		require.True(t, os.IsNotExist(serr))
	})
	t.Run("tap refused", func(t *testing.T) {
		r, w, err := os.Pipe()
		require.NoError(t, err)
		defer r.Close()
		defer w.Close()
		h, cfg := fakeVM(t, "fail-add-net", func(c *Config) {
			c.Network = vmm.Network{Mode: vmm.NetworkTap, Tap: &vmm.Tap{Name: "tap0_cc", File: r}}
		})
		err = h.Start(testCtx(t, 10*time.Second))
		var apiErr *APIError
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, "vm.add-net", apiErr.Op)
		require.ErrorContains(t, err, "start vm "+cfg.Name+": pass tap tap0_cc: cloud-hypervisor vm.add-net: HTTP 500 Internal Server Error: "+clhtest.AddNetErrorBody)
		require.True(t, procGone(h.Pid()), "nothing left running after a refused tap")
	})
	t.Run("deadline", func(t *testing.T) {
		h, cfg := fakeVM(t, "serve")
		h.args = []string{"--api-socket", "path=" + cfg.StateDir + "/elsewhere.sock"}
		err := h.Start(testCtx(t, 300*time.Millisecond))
		require.True(t, errors.Is(err, context.DeadlineExceeded), "%v", err)
		require.ErrorContains(t, err, "api socket "+cfg.APISocketPath()+" did not answer vmm.ping")
		require.True(t, procGone(h.Pid()))
	})
}

func TestUnexpectedExit(t *testing.T) {
	h, _ := fakeVM(t, "deaf")
	require.NoError(t, h.Start(testCtx(t, 10*time.Second)))
	syscall.Kill(h.Pid(), syscall.SIGKILL)
	select {
	case <-h.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("Exited() not closed 5 s after SIGKILL")
	}
	err := h.ExitError()
	require.Error(t, err)
	require.True(t, strings.Contains(err.Error(), "exited unexpectedly (signal: killed)"), "%v", err)
}

// TestStartPassesPodTap starts the fake cloud-hypervisor with a tap that
// lives in a pod-like network namespace: cloud-hypervisor runs in that
// namespace (Tap.NetNS), the tap reaches it with vm.add-net between
// vm.create and vm.boot, and it is that very tap.
func TestStartPassesPodTap(t *testing.T) {
	tap, podPath, podNS := newTapInNetns(t, "tap0_cc")
	h, cfg := fakeVM(t, "serve", func(c *Config) {
		c.Network = vmm.Network{Mode: vmm.NetworkTap, Tap: &vmm.Tap{Name: "tap0_cc", File: tap, NetNS: podPath, MAC: "0a:58:0a:63:00:02", MTU: 1450}}
	})
	require.NoError(t, h.Start(testCtx(t, 10*time.Second)))
	rec := clhtest.ReadRecord(t, cfg.StateDir)
	require.NoError(t, h.Stop(testCtx(t, 10*time.Second)))

	var calls []string
	for _, c := range rec.Calls {
		if c != "GET /api/v1/vmm.ping" {
			calls = append(calls, c)
		}
	}
	require.Equal(t, []string{"PUT /api/v1/vm.create", "PUT /api/v1/vm.add-net", "PUT /api/v1/vm.boot"}, calls)
	var created VmConfig
	require.NoError(t, json.Unmarshal(rec.Create, &created))
	require.Empty(t, created.Net, "the tap is not named in vm.create")
	require.JSONEq(t, `{"mac":"0a:58:0a:63:00:02","num_queues":2}`, string(rec.AddNet))
	require.Len(t, rec.Taps, 1)
	require.Empty(t, rec.Taps[0].Err)
	require.Equal(t, "tap0_cc", rec.Taps[0].Name)
	require.Equal(t, podNS, rec.Taps[0].NetNS, "the tap cloud-hypervisor got lives in the pod namespace")
	require.Equal(t, podNS, rec.NetNS, "cloud-hypervisor runs in the pod namespace, where the tap's name resolves")
	host, err := clhtest.ThreadNetNS()
	require.NoError(t, err)
	require.NotEqual(t, host, rec.NetNS)
}
