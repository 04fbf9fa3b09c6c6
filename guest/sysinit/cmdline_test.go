package sysinit

import (
	"net/netip"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

func TestParseCmdline(t *testing.T) {
	cases := []struct {
		in   string
		want Cmdline
	}{
		{"", Cmdline{}},
		{"console=ttyS0 loglevel=4 panic=-1 quiet", Cmdline{}},
		{
			"BOOT_IMAGE=/vmlinuz console=ttyS0 cc.net=10.0.2.15/24,10.0.2.2,10.0.2.3 cc.transport=vsock:1024 cc.debug\n",
			Cmdline{
				Net: &NetConfig{
					Address: netip.MustParsePrefix("10.0.2.15/24"),
					Gateway: netip.MustParseAddr("10.0.2.2"),
					DNS:     netip.MustParseAddr("10.0.2.3"),
				},
				Transport: Transport{Kind: TransportVsock, Port: 1024},
				Debug:     true,
			},
		},
		{"cc.net=10.0.2.15/24 cc.transport=virtio-serial cc.debug=0", Cmdline{
			Net:       &NetConfig{Address: netip.MustParsePrefix("10.0.2.15/24")},
			Transport: Transport{Kind: TransportVirtioSerial, PortName: "agent.0"},
		}},
		{"cc.net=fd00::5/64,fd00::1 cc.transport=virtio-serial:ctl.1 cc.debug=on", Cmdline{
			Net: &NetConfig{
				Address: netip.MustParsePrefix("fd00::5/64"),
				Gateway: netip.MustParseAddr("fd00::1"),
			},
			Transport: Transport{Kind: TransportVirtioSerial, PortName: "ctl.1"},
			Debug:     true,
		}},
		{`init="/init" cc.transport="vsock" foo="a b cc.bogus=1"`, Cmdline{
			Transport: Transport{Kind: TransportVsock, Port: DefaultVsockPort},
		}},
	}
	for _, tc := range cases {
		got, err := ParseCmdline(tc.in)
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got, tc.in)
	}
}

func TestParseCmdlineErrors(t *testing.T) {
	cases := map[string]string{
		"cc.bogus=1 cc.net=10.0.2.15/24 cc.zzz":   "unknown keys cc.bogus, cc.zzz",
		"cc.net=10.0.2.15":                        "address",
		"cc.net=":                                 "want ADDRESS/PREFIX",
		"cc.net=10.0.2.15/24,10.0.3.2":            "gateway 10.0.3.2 is outside 10.0.2.0/24",
		"cc.net=10.0.2.15/24,10.0.2.2,dns":        "dns",
		"cc.net=10.0.2.15/24,10.0.2.2,10.0.2.3,x": "want ADDRESS/PREFIX",
		"cc.transport=tcp":                        "want virtio-serial[:PORTNAME] or vsock[:PORT]",
		"cc.transport=vsock:0":                    "want a number from 1 to 4294967294",
		"cc.transport=vsock:4294967295":           "want a number from 1 to 4294967294",
		"cc.transport=vsock:http":                 "want a number",
		"cc.transport=virtio-serial:":             "port name",
		"cc.debug=maybe":                          "want 1, 0, true, false",
		"cc.debug cc.debug=1":                     "appears more than once",
	}
	for in, want := range cases {
		_, err := ParseCmdline(in)
		require.ErrorIs(t, err, errdefs.ErrInvalidArgument, in)
		require.ErrorContains(t, err, want, in)
	}
}

func TestTransportString(t *testing.T) {
	require.Equal(t, "vsock:1024", Transport{Kind: TransportVsock, Port: 1024}.String())
	require.Equal(t, "virtio-serial:agent.0", Transport{Kind: TransportVirtioSerial, PortName: "agent.0"}.String())
	require.Equal(t, "", Transport{}.String())
	for _, tr := range []Transport{{Kind: TransportVsock, Port: 77}, {Kind: TransportVirtioSerial, PortName: "x"}} {
		c, err := ParseCmdline("cc.transport=" + tr.String())
		require.NoError(t, err)
		require.Equal(t, tr, c.Transport)
	}
}
