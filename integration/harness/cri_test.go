package harness

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
)

func TestFreeSubnetAndConflist(t *testing.T) {
	requireRoot(t)
	p, err := freeSubnet()
	require.NoError(t, err)
	require.Equal(t, 24, p.Bits())
	require.True(t, netip.MustParsePrefix("10.200.0.0/13").Overlaps(p) || netip.MustParsePrefix("10.208.0.0/12").Overlaps(p) ||
		netip.MustParsePrefix("10.224.0.0/11").Overlaps(p), "subnet %s is in 10.200-254", p)

	c := &CRI{bridge: "ccbr01234567", subnet: netip.MustParsePrefix("10.201.7.0/24"), dir: "/tmp/cri-x"}
	var conf struct {
		Name    string `json:"name"`
		Plugins []struct {
			Type   string `json:"type"`
			Bridge string `json:"bridge"`
			IPMasq bool   `json:"ipMasq"`
			IPAM   struct {
				DataDir string                `json:"dataDir"`
				Ranges  [][]map[string]string `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	require.NoError(t, json.Unmarshal(c.conflist(), &conf))
	require.Equal(t, "coffer-test-01234567", conf.Name)
	require.Len(t, conf.Plugins, 1)
	require.Equal(t, "bridge", conf.Plugins[0].Type)
	require.Equal(t, "ccbr01234567", conf.Plugins[0].Bridge)
	require.False(t, conf.Plugins[0].IPMasq)
	require.Equal(t, "/tmp/cri-x/ipam", conf.Plugins[0].IPAM.DataDir)
	require.Equal(t, [][]map[string]string{{{"subnet": "10.201.7.0/24", "gateway": "10.201.7.1"}}}, conf.Plugins[0].IPAM.Ranges)
}

// TestCRIRunPodWithRunc proves the CRI + CNI setup with the default runc
// handler: the runtime and network are ready, a pod gets an address on
// the test bridge, and stopping and removing it leaves no veth, address,
// network namespace or shim behind.
func TestCRIRunPodWithRunc(t *testing.T) {
	requireRoot(t)
	c := StartCRI(t, CRIOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	out, err := c.Crictl(ctx, "info")
	require.NoError(t, err)
	var info struct {
		Status struct {
			Conditions []struct {
				Type    string `json:"type"`
				Status  bool   `json:"status"`
				Reason  string `json:"reason"`
				Message string `json:"message"`
			} `json:"conditions"`
		} `json:"status"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &info), "crictl info output:\n%s", out)
	// Other conditions (ContainerdHasNoDeprecationWarnings: cgroup v1
	// here) do not matter for pods.
	ready := map[string]string{}
	for _, cond := range info.Status.Conditions {
		if cond.Status {
			ready[cond.Type] = "true"
		} else {
			ready[cond.Type] = cond.Reason + ": " + cond.Message
		}
	}
	require.Equal(t, "true", ready["RuntimeReady"], "crictl info condition RuntimeReady")
	require.Equal(t, "true", ready["NetworkReady"], "crictl info condition NetworkReady")

	id, err := c.Crictl(ctx, "runp", "--runtime", "runc", c.PodConfig(t, "smoke", nil))
	require.NoError(t, err)
	require.NotEmpty(t, id)

	out, err = c.Crictl(ctx, "inspectp", id)
	require.NoError(t, err)
	var pod struct {
		Status struct {
			State   string `json:"state"`
			Network struct {
				IP string `json:"ip"`
			} `json:"network"`
		} `json:"status"`
		Info struct {
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct {
						Type string `json:"type"`
						Path string `json:"path"`
					} `json:"namespaces"`
				} `json:"linux"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &pod), "crictl inspectp output:\n%s", out)
	require.Equal(t, "SANDBOX_READY", pod.Status.State)
	ip, err := netip.ParseAddr(pod.Status.Network.IP)
	require.NoError(t, err, "pod IP %q", pod.Status.Network.IP)
	require.True(t, c.Subnet().Contains(ip), "pod IP %s is in the test subnet %s", ip, c.Subnet())
	var netnsPath string
	for _, ns := range pod.Info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			netnsPath = ns.Path
		}
	}
	require.NotEmpty(t, netnsPath, "the sandbox spec names its network namespace")
	require.FileExists(t, netnsPath)

	br, err := netlink.LinkByName(c.Bridge())
	require.NoError(t, err, "the bridge plugin created %s", c.Bridge())
	require.Len(t, bridgePorts(t, br), 1, "one veth on the bridge")
	reserved, err := os.ReadDir(c.IPAMDir() + "/" + "coffer-test-" + c.Bridge()[len("ccbr"):])
	require.NoError(t, err)
	require.NotEmpty(t, reserved, "host-local recorded the address")

	_, err = c.Crictl(ctx, "stopp", id)
	require.NoError(t, err)
	_, err = c.Crictl(ctx, "rmp", id)
	require.NoError(t, err)

	out, err = c.Crictl(ctx, "pods", "-q")
	require.NoError(t, err)
	require.Empty(t, out, "no pods left")
	require.Empty(t, bridgePorts(t, br), "no veth left on the bridge")
	require.NoFileExists(t, netnsPath, "the pod's network namespace is gone")
	NoMountsUnder(t, c.StateDir())
	reserved, _ = os.ReadDir(c.IPAMDir() + "/" + "coffer-test-" + c.Bridge()[len("ccbr"):])
	for _, e := range reserved {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			t.Errorf("leftover: host-local still reserves %s", e.Name())
		}
	}
	procs, err := ListProcs()
	require.NoError(t, err)
	for _, p := range procs {
		if p.Alive() && p.Mentions(id) {
			t.Errorf("leftover: process mentioning the pod id: %s", p)
		}
	}
}

// bridgePorts returns the links enslaved to br.
func bridgePorts(t *testing.T, br netlink.Link) []string {
	t.Helper()
	links, err := netlink.LinkList()
	require.NoError(t, err)
	var out []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}
