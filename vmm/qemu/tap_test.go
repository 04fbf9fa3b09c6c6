package qemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/vmm"
	"github.com/cofferhq/coffer/vmm/qmp"
	"github.com/containerd/errdefs"
	"github.com/vishvananda/netlink"
)

func TestArgsTapByName(t *testing.T) {
	cfg := goldenBase()
	cfg.Network = vmm.Network{Mode: vmm.NetworkTap, Tap: &vmm.Tap{Name: "tap,x"}}
	args, err := Args(cfg)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(args, "\n")
	for _, want := range []string{
		"-netdev\ntap,id=net0,ifname=tap,,x,script=no,downscript=no\n",
		"-device\nvirtio-net-pci,netdev=net0,romfile=",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("Args() =\n%s\nwant it to contain\n%s", joined, want)
		}
	}
	cfg.Network.Tap = &vmm.Tap{}
	if _, err := Args(cfg); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "neither File nor Name") {
		t.Errorf("Args() with an empty tap = %v, want ErrInvalidArgument naming File and Name", err)
	}
	cfg.Network.Tap = nil
	if _, err := Args(cfg); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Args() without a tap = %v, want ErrInvalidArgument", err)
	}
}

// TestStartWithTapFD starts QEMU (stub kernel) with an open tap passed as a
// file and checks that QEMU holds the tap at TapFD and that the NIC has the
// configured MAC.
func TestStartWithTapFD(t *testing.T) {
	requireQEMU(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) to create a tap device")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no tun driver here: %v", err)
	}
	// Not persistent: the tap goes away when the last file on it closes, so
	// it cannot outlive the test even in this (the test's) netns.
	tap := &netlink.Tuntap{
		LinkAttrs:  netlink.LinkAttrs{Name: fmt.Sprintf("ccqt%d", os.Getpid()%100000)},
		Mode:       netlink.TUNTAP_MODE_TAP,
		Flags:      netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
		Queues:     1,
		NonPersist: true,
	}
	if err := netlink.LinkAdd(tap); err != nil {
		t.Fatalf("create tap: %v", err)
	}
	file := tap.Fds[0]
	defer file.Close()

	cfg := testConfig(t)
	cfg.Network = vmm.Network{Mode: vmm.NetworkTap, Tap: &vmm.Tap{
		Name: tap.Name, File: file, MAC: "0a:58:0a:58:00:05", MTU: 1450,
	}}
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatalf("Start() = %v", err)
	}
	defer q.Stop(testCtx(t, 10*time.Second))

	target, err := os.Readlink("/proc/" + strconv.Itoa(q.Pid()) + "/fd/" + strconv.Itoa(TapFD))
	if err != nil || target != "/dev/net/tun" {
		t.Errorf("qemu fd %d = %q (%v), want /dev/net/tun", TapFD, target, err)
	}
	c, err := qmp.Connect(testCtx(t, 5*time.Second), cfg.QMPSocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var filters []struct {
		Name    string `json:"name"`
		MainMAC string `json:"main-mac"`
	}
	if err := c.Execute(testCtx(t, 5*time.Second), "query-rx-filter", nil, &filters); err != nil {
		t.Fatalf("query-rx-filter: %v", err)
	}
	b, _ := json.Marshal(filters)
	if len(filters) != 1 || filters[0].MainMAC != "0a:58:0a:58:00:05" {
		t.Errorf("query-rx-filter = %s, want one NIC with main-mac 0a:58:0a:58:00:05", b)
	}
	var info string
	if err := c.Execute(testCtx(t, 5*time.Second), "human-monitor-command", map[string]string{"command-line": "info network"}, &info); err != nil {
		t.Fatalf("info network: %v", err)
	}
	if !strings.Contains(info, "net0: index=0,type=tap,fd=3") {
		t.Errorf("info network =\n%s\nwant net0 of type tap on fd=3", info)
	}
}
