package bench

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseStatusMemory(t *testing.T) {
	status := "Name:\tcontainerd-shim\nVmPeak:\t 1262340 kB\nVmHWM:\t   18316 kB\nVmRSS:\t   17856 kB\nThreads:\t9\n"
	m, err := parseStatusMemory([]byte(status), 42)
	require.NoError(t, err)
	require.Equal(t, Memory{RSS: 17856 * 1024, Peak: 18316 * 1024}, m)

	_, err = parseStatusMemory([]byte("Name:\tkthreadd\nThreads:\t1\n"), 2)
	require.ErrorContains(t, err, "pid 2: status has no VmRSS/VmHWM")
	_, err = parseStatusMemory([]byte("VmHWM:\t12 MB\nVmRSS:\t1 kB\n"), 3)
	require.ErrorContains(t, err, `VmHWM is "12 MB", want "<n> kB"`)
}

func TestReadMemorySelf(t *testing.T) {
	m, err := ReadMemory(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, m.RSS)
	require.GreaterOrEqual(t, m.Peak, m.RSS)

	_, err = ReadMemory(0)
	require.ErrorContains(t, err, "read memory of pid 0")
}

func TestIsShimFor(t *testing.T) {
	const addr = "/tmp/coffer-bench.abc/containerd.sock"
	daemon := []string{"/work/main/build/bin/containerd-shim-cc-v2", "-namespace", "ns", "-id", "bench-1", "-address", addr, "-debug"}
	require.True(t, isShimFor(daemon, "bench-1", addr))
	require.False(t, isShimFor(daemon, "bench-2", addr), "other container")
	require.False(t, isShimFor(daemon, "bench-1", "/run/containerd/containerd.sock"), "other containerd")
	start := []string{"containerd-shim-cc-v2", "-namespace", "ns", "-address", addr, "-id", "bench-1", "start"}
	require.False(t, isShimFor(start, "bench-1", addr), "the one-shot start action")
	require.False(t, isShimFor([]string{"containerd-shim-runc-v2", "-id", "bench-1", "-address", addr}, "bench-1", addr))
	require.False(t, isShimFor(nil, "bench-1", addr))
}

func TestQEMUHelpers(t *testing.T) {
	// The shim's QEMU command line, as seen in /proc during a real run.
	argv := []string{"qemu-system-x86_64", "-name", "coffer-dbg-1", "-machine", "q35", "-accel", "tcg",
		"-chardev", "file,id=console,path=/run/cc/906e717c7f5db12f/console.log", "-serial", "chardev:console",
		"-chardev", "socket,id=agent,path=/run/cc/906e717c7f5db12f/agent.sock,server=on,wait=off"}
	require.True(t, isQEMU(argv))
	require.False(t, isQEMU([]string{"/usr/bin/qemu-img"}))
	require.Equal(t, "/run/cc/906e717c7f5db12f/console.log", qemuConsolePath(argv))
	require.Equal(t, "/tmp/a,b/console.log", qemuConsolePath([]string{"qemu-system-x86_64", "-chardev", "file,id=console,path=/tmp/a,,b/console.log"}))
	require.Empty(t, qemuConsolePath([]string{"qemu-system-x86_64", "-serial", "stdio"}))
}

func TestVMStateDirMatchesShim(t *testing.T) {
	// The shim ran container dbg-1 in namespace coffer-dbg-3regto with
	// -chardev file,id=console,path=/run/cc/906e717c7f5db12f/console.log.
	require.Equal(t, "/run/cc/906e717c7f5db12f", vmStateDir("coffer-dbg-3regto", "dbg-1"))
}
