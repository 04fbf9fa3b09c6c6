package qemu

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/vmm"
)

// requireQEMU skips the test on a host without QEMU.
func requireQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(vmm.DefaultBinary); err != nil {
		t.Skipf("%s is not installed: this test runs a real QEMU", vmm.DefaultBinary)
	}
}

// stubKernel returns a 36-byte multiboot (v1) kernel that QEMU's -kernel
// loader accepts: a header with the a.out kludge (flag bit 16) loading the
// file at 1 MiB, and code that halts forever (cli; hlt; jmp back). It lets
// tests run QEMU with the exact command line Args builds, at no CPU cost.
func stubKernel() []byte {
	const magic, flags, load uint32 = 0x1BADB002, 0x00010000, 0x100000
	sum := uint32(magic + flags)
	checksum := -sum // the three header fields sum to 0 mod 2^32
	var b bytes.Buffer
	for _, v := range []uint32{magic, flags, checksum, load, load, 0, 0, load + 32} {
		binary.Write(&b, binary.LittleEndian, v)
	}
	b.Write([]byte{0xFA, 0xF4, 0xEB, 0xFD})
	return b.Bytes()
}

// testConfig returns a valid Config for a TCG VM in a fresh short state
// directory, with the stub kernel, a user network with a guest forward, a
// virtio-serial agent socket and an fw_cfg entry.
func testConfig(t *testing.T) *vmm.Config {
	t.Helper()
	dir, err := os.MkdirTemp("", "ccq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		Cleanup(dir)
		os.RemoveAll(dir)
	})
	kernel := filepath.Join(dir, "vmlinuz")
	initrd := filepath.Join(dir, "initrd.img")
	if err := os.WriteFile(kernel, stubKernel(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(initrd, []byte("initrd"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &vmm.Config{
		Name:      "test-" + filepath.Base(dir),
		StateDir:  dir,
		VCPUs:     1,
		MemoryMiB: 64,
		Kernel:    kernel,
		Initrd:    initrd,
		Cmdline:   "console=ttyS0",
		Accel:     vmm.AccelTCG,
		Network: vmm.Network{Mode: vmm.NetworkUser, Restrict: true, Forwards: []vmm.Forward{
			{GuestIP: "10.0.2.100", GuestPort: 5000, Command: []string{"nc", "127.0.0.1", "5000"}},
		}},
		Agent: vmm.Agent{Kind: vmm.AgentVirtioSerial, SocketPath: filepath.Join(dir, "agent.sock")},
		FWCfg: []vmm.FWCfgEntry{{Name: "opt/cc/test", String: "a,b"}},
	}
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
