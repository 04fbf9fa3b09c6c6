package transport

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	present := filepath.Join(dir, "vhost-vsock")
	require.NoError(t, os.WriteFile(present, nil, 0o600))
	absent := filepath.Join(dir, "missing")

	require.Equal(t, KindVsock, resolve(KindAuto, present))
	require.Equal(t, KindVsock, resolve("", present))
	require.Equal(t, KindVirtioSerial, resolve(KindAuto, absent))
	require.Equal(t, KindVirtioSerial, resolve(KindVirtioSerial, present), "an explicit kind is kept")
	require.Equal(t, KindVsock, resolve(KindVsock, absent), "an explicit kind is kept")

	_, err := os.Stat(vhostVsockDevice)
	want := KindVirtioSerial
	if err == nil {
		want = KindVsock
	}
	require.Equal(t, want, Resolve(KindAuto), "Resolve looks at %s", vhostVsockDevice)
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{"": KindAuto, "auto": KindAuto, "vsock": KindVsock, "virtio-serial": KindVirtioSerial} {
		got, err := ParseKind(in)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := ParseKind("virtio")
	require.EqualError(t, err, `parse transport kind: "virtio" is not a transport, want "vsock", "virtio-serial" or "auto"`)
}

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 10000)
	in := "plain\n" + long + "COFFER-AGENT-HELLO 1\n\x00\x01junkCOFFER-AGENT-SYNC 1\nunfinished"
	lr := newLineReader(bufio.NewReaderSize(strings.NewReader(in), 16))

	line, err := lr.next()
	require.NoError(t, err)
	require.Equal(t, "plain", line)

	line, err = lr.next()
	require.NoError(t, err)
	require.Len(t, line, maxLineTail-1, "a long line keeps its tail only")
	v, ok := versionAfter(line, markAgentHello)
	require.True(t, ok)
	require.Equal(t, "1", v)

	line, err = lr.next()
	require.NoError(t, err)
	v, ok = versionAfter(line, markAgentSync)
	require.True(t, ok, "a marker glued to junk is found")
	require.Equal(t, "1", v)
	_, ok = versionAfter(line, markAgentHello)
	require.False(t, ok)

	_, err = lr.next()
	require.Error(t, err)
	require.Equal(t, "unfinished", string(lr.tail), "an unfinished line survives a read error")
	require.EqualValues(t, len(in), lr.total)
}

// fakeSysfs creates sysDir/<dev>/name files.
func fakeSysfs(t *testing.T, sysDir string, ports map[string]string) {
	for dev, name := range ports {
		require.NoError(t, os.MkdirAll(filepath.Join(sysDir, dev), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(sysDir, dev, "name"), []byte(name+"\n"), 0o644))
	}
}

func TestFindVirtioPort(t *testing.T) {
	t.Run("appears late", func(t *testing.T) {
		sysDir := filepath.Join(t.TempDir(), "virtio-ports")
		go func() {
			time.Sleep(150 * time.Millisecond)
			fakeSysfs(t, sysDir, map[string]string{"vport1p1": "org.qemu.guest_agent.0", "vport2p1": "agent.0"})
		}()
		dev, err := findVirtioPort(testCtx(t, 5*time.Second), sysDir, "/dev", "agent.0")
		require.NoError(t, err)
		require.Equal(t, "/dev/vport2p1", dev)
	})
	t.Run("never appears", func(t *testing.T) {
		sysDir := t.TempDir()
		fakeSysfs(t, sysDir, map[string]string{"vport1p1": "org.qemu.guest_agent.0", "vport1p2": ""})
		_, err := findVirtioPort(testCtx(t, 200*time.Millisecond), sysDir, "/dev", "agent.0")
		require.ErrorIs(t, err, errdefs.ErrNotFound)
		require.ErrorContains(t, err, `find virtio-serial port "agent.0": no port with that name under `+sysDir)
		require.ErrorContains(t, err, `(ports present: vport1p1="org.qemu.guest_agent.0", vport1p2="")`)
	})
	t.Run("no driver", func(t *testing.T) {
		sysDir := filepath.Join(t.TempDir(), "virtio-ports")
		_, err := findVirtioPort(testCtx(t, 200*time.Millisecond), sysDir, "/dev", "agent.0")
		require.ErrorContains(t, err, "does not exist: the virtio_console module is not loaded")
	})
}

func TestListenVirtioSerialNoPort(t *testing.T) {
	// The real entry point on this machine, which has no agent.0 port: it
	// must fail within ctx and say which ports it saw.
	ports, _ := listVirtioPorts(sysVirtioPorts)
	for dev, name := range ports {
		if name == VirtioSerialPortName {
			t.Skipf("this machine has a real %s port (%s); not opening it", name, dev)
		}
	}
	start := time.Now()
	_, err := ListenVirtioSerial(testCtx(t, 200*time.Millisecond), VirtioSerialPortName)
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	require.ErrorContains(t, err, `find virtio-serial port "agent.0": no port with that name under /sys/class/virtio-ports`)
	require.ErrorContains(t, err, "ports present: ")
	require.Less(t, time.Since(start), time.Second)
	t.Log(err)
}
