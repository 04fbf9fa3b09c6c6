package sysinit

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestParseNetConfigFull(t *testing.T) {
	in := "10.88.0.5/16,10.88.0.1,10.96.0.10,mac=0a:58:0a:58:00:05,mtu=1450," +
		"addr=fd00:88::5/64,route=10.96.0.0/12@10.88.0.1,route=169.254.1.1/32,route=::/0@fe80::1," +
		"dns=10.96.0.11,dns=fd00::53,search=default.svc.cluster.local,search=cluster.local"
	got, err := ParseNetConfig(in)
	require.NoError(t, err)
	require.Equal(t, &NetConfig{
		Address:   netip.MustParsePrefix("10.88.0.5/16"),
		Gateway:   netip.MustParseAddr("10.88.0.1"),
		DNS:       netip.MustParseAddr("10.96.0.10"),
		MAC:       mustMAC("0a:58:0a:58:00:05"),
		MTU:       1450,
		Addresses: []netip.Prefix{netip.MustParsePrefix("fd00:88::5/64")},
		Routes: []Route{
			{Dst: netip.MustParsePrefix("10.96.0.0/12"), Via: netip.MustParseAddr("10.88.0.1")},
			{Dst: netip.MustParsePrefix("169.254.1.1/32")},
			{Dst: netip.MustParsePrefix("::/0"), Via: netip.MustParseAddr("fe80::1")},
		},
		MoreDNS: []netip.Addr{netip.MustParseAddr("10.96.0.11"), netip.MustParseAddr("fd00::53")},
		Search:  []string{"default.svc.cluster.local", "cluster.local"},
	}, got)
	require.Equal(t, in, got.String(), "String is the canonical form ParseNetConfig read")
	require.Equal(t, []netip.Addr{
		netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("10.96.0.11"), netip.MustParseAddr("fd00::53"),
	}, got.Nameservers())
}

// TestParseNetConfigCompat pins that values of the old ADDRESS[,GW[,DNS]]
// form parse as before, and that positional fields may be empty.
func TestParseNetConfigCompat(t *testing.T) {
	cases := map[string]NetConfig{
		"10.0.2.15/24,10.0.2.2,10.0.2.3": {
			Address: netip.MustParsePrefix("10.0.2.15/24"),
			Gateway: netip.MustParseAddr("10.0.2.2"),
			DNS:     netip.MustParseAddr("10.0.2.3"),
		},
		"10.0.2.15/24": {Address: netip.MustParsePrefix("10.0.2.15/24")},
		"fd00::5/64,fd00::1": {
			Address: netip.MustParsePrefix("fd00::5/64"),
			Gateway: netip.MustParseAddr("fd00::1"),
		},
		"10.0.2.15/24,,10.0.2.3": {
			Address: netip.MustParsePrefix("10.0.2.15/24"),
			DNS:     netip.MustParseAddr("10.0.2.3"),
		},
		"10.0.2.15/24,mtu=9000": {Address: netip.MustParsePrefix("10.0.2.15/24"), MTU: 9000},
		// Calico: a /32 address, the gateway reached through an on-link route.
		"192.168.7.9/32,169.254.1.1,route=169.254.1.1/32": {
			Address: netip.MustParsePrefix("192.168.7.9/32"),
			Gateway: netip.MustParseAddr("169.254.1.1"),
			Routes:  []Route{{Dst: netip.MustParsePrefix("169.254.1.1/32")}},
		},
	}
	for in, want := range cases {
		got, err := ParseNetConfig(in)
		require.NoError(t, err, in)
		require.Equal(t, &want, got, in)
		require.Equal(t, in, got.String(), in)
	}
}

func TestParseNetConfigErrors(t *testing.T) {
	cases := map[string]string{
		"":                                 "want ADDRESS/PREFIX",
		",10.0.2.2":                        "want ADDRESS/PREFIX",
		"mtu=1500":                         "want ADDRESS/PREFIX",
		"10.0.2.15/24,10.0.2.2,10.0.2.3,x": `field "x" is not KEY=VALUE`,
		"10.0.2.15/24,mac=zz":              "want a 6-byte MAC",
		"10.0.2.15/24,mac=00:00:00:00:00:00:00:01":                 "want a 6-byte MAC",
		"10.0.2.15/24,mac=0a:58:0a:58:00:05,mac=0a:58:0a:58:00:06": "mac= appears more than once",
		"10.0.2.15/24,mtu=67":                                      "want a number of bytes from 68 to 65535",
		"10.0.2.15/24,mtu=1500,mtu=1400":                           "mtu= appears more than once",
		"10.0.2.15/24,addr=fd00::5":                                "addr=fd00::5",
		"10.0.2.15/24,route=10.96.0.1/12":                          "has host bits set: want 10.96.0.0/12",
		"10.0.2.15/24,route=10.96.0.0/12@fd00::1":                  "different address families",
		"10.0.2.15/24,route=10.96.0.0/12@10.1.1.1":                 "next hop 10.1.1.1 is not on the link",
		"10.0.2.15/24,route=nowhere":                               "destination",
		"10.0.2.15/24,dns=name":                                    "dns=name",
		"10.0.2.15/24,search=":                                     "want a domain name",
		"10.0.2.15/24,color=blue":                                  `key "color" is unknown`,
		"192.168.7.9/32,169.254.1.1":                               "gateway 169.254.1.1 is outside 192.168.7.9/32: want a gateway on the guest's subnet, or add an on-link route=169.254.1.1/32",
	}
	for in, want := range cases {
		_, err := ParseNetConfig(in)
		require.ErrorContains(t, err, want, in)
	}
	_, err := ParseCmdline("cc.net=10.0.2.15/24,mtu=1")
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	require.ErrorContains(t, err, `cc.net="10.0.2.15/24,mtu=1"`)
}

func TestResolvConf(t *testing.T) {
	require.Equal(t, "", resolvConf(nil))
	require.Equal(t, "", resolvConf(&NetConfig{Address: netip.MustParsePrefix("10.0.2.15/24")}))
	n, err := ParseNetConfig("10.0.2.15/24,10.0.2.2,10.0.2.3,dns=1.1.1.1,search=a.example,search=b.example")
	require.NoError(t, err)
	require.Equal(t, "nameserver 10.0.2.3\nnameserver 1.1.1.1\nsearch a.example b.example\n", resolvConf(n))
	n, err = ParseNetConfig("10.0.2.15/24,search=only.example")
	require.NoError(t, err)
	require.Equal(t, "search only.example\n", resolvConf(n))
}

func TestReadNetFWCfg(t *testing.T) {
	root := t.TempDir()
	n, err := readNetFWCfg(root)
	require.NoError(t, err)
	require.Nil(t, n, "no item: no configuration")

	dir := filepath.Join(root, FWCfgNet)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "raw"), []byte("10.88.0.5/16,10.88.0.1,mtu=1450\n"), 0o644))
	n, err = readNetFWCfg(root)
	require.NoError(t, err)
	require.Equal(t, &NetConfig{
		Address: netip.MustParsePrefix("10.88.0.5/16"),
		Gateway: netip.MustParseAddr("10.88.0.1"),
		MTU:     1450,
	}, n)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "raw"), []byte("garbage"), 0o644))
	_, err = readNetFWCfg(root)
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	require.ErrorContains(t, err, `fw_cfg item opt/cc/net ("garbage")`)
}

func TestOrderRoutes(t *testing.T) {
	a := Route{Dst: netip.MustParsePrefix("10.96.0.0/12"), Via: netip.MustParseAddr("169.254.1.1")}
	b := Route{Dst: netip.MustParsePrefix("169.254.1.1/32")}
	c := Route{Dst: netip.MustParsePrefix("10.0.0.0/8"), Via: netip.MustParseAddr("169.254.1.1")}
	d := Route{Dst: netip.MustParsePrefix("192.168.0.0/16")}
	require.Equal(t, []Route{b, d, a, c}, orderRoutes([]Route{a, b, c, d}))
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
