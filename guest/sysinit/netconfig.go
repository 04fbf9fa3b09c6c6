package sysinit

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// FWCfgNet is the fw_cfg item that carries the guest network configuration
// in the cc.net value syntax (ParseNetConfig), without the "cc.net=" prefix.
// When present it replaces the cc.net kernel parameter. The VMM passes it
// as vmm.FWCfgEntry{Name: FWCfgNet, String: cfg.String()}.
//
// It exists because a confidential VM's kernel command line is part of the
// launch measurement (SEV-SNP kernel-hashes, the sim TEE): a per-pod address
// on the command line would make every pod's measurement different, while
// fw_cfg items are not measured. The network configuration comes from the
// untrusted host either way.
const FWCfgNet = "opt/cc/net"

// fwCfgRoot is where the qemu_fw_cfg module exposes fw_cfg items by name.
const fwCfgRoot = "/sys/firmware/qemu_fw_cfg/by_name"

// Limits of the network configuration values.
const (
	// MinMTU is the least MTU, bytes, ParseNetConfig accepts (IPv4's
	// minimum, RFC 791).
	MinMTU = 68
	// MaxMTU is the largest MTU, bytes, ParseNetConfig accepts.
	MaxMTU = 65535
)

// NetConfig is the guest NIC's static configuration: the parsed cc.net
// kernel parameter or fw_cfg item FWCfgNet. Its text form (String,
// ParseNetConfig) is
//
//	ADDRESS/PREFIX[,GATEWAY[,DNS]][,KEY=VALUE]...
//
// for example "10.88.0.5/16,10.88.0.1,10.96.0.10,mac=0a:58:0a:58:00:05,mtu=1450".
type NetConfig struct {
	// Address is the interface address with its prefix length (10.0.2.15/24).
	Address netip.Prefix
	// Gateway is the default route's next hop; invalid (zero) for no default
	// route. It must be reachable: inside Address or Addresses, inside an
	// on-link route of Routes, or an IPv6 link-local address.
	Gateway netip.Addr
	// DNS is the first resolver written to /etc/resolv.conf; invalid (zero)
	// for none.
	DNS netip.Addr
	// MAC (key mac=, at most once) picks the interface with this hardware
	// address; when no interface has it, the first interface besides lo
	// takes it. Nil means the first interface besides lo, unchanged.
	MAC net.HardwareAddr
	// MTU (key mtu=, at most once) is the interface MTU in bytes, MinMTU to
	// MaxMTU; 0 leaves the device's default (1500 for virtio-net without
	// host_mtu).
	MTU int
	// Addresses (key addr=, repeatable) are more interface addresses, for
	// example the IPv6 address of a dual-stack pod.
	Addresses []netip.Prefix
	// Routes (key route=DEST/PREFIX[@VIA], repeatable) are static routes
	// through the interface besides the connected subnets and the default
	// route via Gateway. They are added in order, on-link routes first.
	Routes []Route
	// MoreDNS (key dns=, repeatable) are further resolvers, after DNS.
	MoreDNS []netip.Addr
	// Search (key search=, repeatable) are DNS search domains.
	Search []string
}

// Route is one static route through the guest NIC.
type Route struct {
	// Dst is the destination prefix; 0.0.0.0/0 or ::/0 for a default route.
	Dst netip.Prefix
	// Via is the next hop, of Dst's address family; invalid (zero) for an
	// on-link route (scope link).
	Via netip.Addr
}

// String formats r the way the route= key spells it: DEST/PREFIX[@VIA].
func (r Route) String() string {
	if r.Via.IsValid() {
		return r.Dst.String() + "@" + r.Via.String()
	}
	return r.Dst.String()
}

// Keys of the optional KEY=VALUE fields of a NetConfig's text form.
const (
	netKeyMAC    = "mac"
	netKeyMTU    = "mtu"
	netKeyAddr   = "addr"
	netKeyRoute  = "route"
	netKeyDNS    = "dns"
	netKeySearch = "search"
)

// netForm is the syntax ParseNetConfig accepts, for error messages.
const netForm = "want ADDRESS/PREFIX[,GATEWAY[,DNS]][,mac=MAC][,mtu=N][,addr=ADDRESS/PREFIX]...[,route=DEST/PREFIX[@VIA]]...[,dns=IP]...[,search=DOMAIN]..., e.g. 10.0.2.15/24,10.0.2.2,10.0.2.3"

// ParseNetConfig parses the cc.net value syntax (see NetConfig):
// comma-separated fields, first up to three positional ones (ADDRESS/PREFIX
// required; GATEWAY and DNS may be empty), then KEY=VALUE fields:
//
//   - mac=HH:HH:HH:HH:HH:HH, at most once: the interface's MAC address;
//   - mtu=N, at most once: the MTU in bytes, MinMTU to MaxMTU;
//   - addr=ADDRESS/PREFIX: one more interface address;
//   - route=DEST/PREFIX[@VIA]: a static route, on-link without @VIA;
//   - dns=IP: one more resolver;
//   - search=DOMAIN: a DNS search domain.
//
// Every value without KEY=VALUE fields parses as it did before they
// existed. The error names the field, the value found and the form wanted.
func ParseNetConfig(v string) (*NetConfig, error) {
	fields := strings.Split(v, ",")
	var positional []string
	for len(fields) > 0 && !strings.Contains(fields[0], "=") && len(positional) < 3 {
		positional, fields = append(positional, fields[0]), fields[1:]
	}
	if len(positional) == 0 || positional[0] == "" {
		return nil, errors.New(netForm)
	}
	addr, err := netip.ParsePrefix(positional[0])
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	n := &NetConfig{Address: addr}
	if len(positional) > 1 && positional[1] != "" {
		if n.Gateway, err = netip.ParseAddr(positional[1]); err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
	}
	if len(positional) > 2 && positional[2] != "" {
		if n.DNS, err = netip.ParseAddr(positional[2]); err != nil {
			return nil, fmt.Errorf("dns: %w", err)
		}
	}
	seen := map[string]bool{}
	for _, f := range fields {
		key, val, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("field %q is not KEY=VALUE after the three positional fields: %s", f, netForm)
		}
		if (key == netKeyMAC || key == netKeyMTU) && seen[key] {
			return nil, fmt.Errorf("%s= appears more than once", key)
		}
		seen[key] = true
		if err := n.setKey(key, val); err != nil {
			return nil, err
		}
	}
	if err := n.check(); err != nil {
		return nil, err
	}
	return n, nil
}

// setKey parses one KEY=VALUE field into n.
func (n *NetConfig) setKey(key, val string) error {
	switch key {
	case netKeyMAC:
		mac, err := net.ParseMAC(val)
		if err != nil || len(mac) != 6 {
			return fmt.Errorf("mac=%s: want a 6-byte MAC address such as 0a:58:0a:58:00:05", val)
		}
		n.MAC = mac
	case netKeyMTU:
		mtu, err := strconv.Atoi(val)
		if err != nil || mtu < MinMTU || mtu > MaxMTU {
			return fmt.Errorf("mtu=%s: want a number of bytes from %d to %d", val, MinMTU, MaxMTU)
		}
		n.MTU = mtu
	case netKeyAddr:
		p, err := netip.ParsePrefix(val)
		if err != nil {
			return fmt.Errorf("addr=%s: %w", val, err)
		}
		n.Addresses = append(n.Addresses, p)
	case netKeyRoute:
		r, err := parseRoute(val)
		if err != nil {
			return fmt.Errorf("route=%s: %w", val, err)
		}
		n.Routes = append(n.Routes, r)
	case netKeyDNS:
		a, err := netip.ParseAddr(val)
		if err != nil {
			return fmt.Errorf("dns=%s: %w", val, err)
		}
		n.MoreDNS = append(n.MoreDNS, a)
	case netKeySearch:
		if val == "" || strings.ContainsAny(val, " \t,=") {
			return fmt.Errorf("search=%q: want a domain name without spaces, ',' or '='", val)
		}
		n.Search = append(n.Search, val)
	default:
		return fmt.Errorf("key %q is unknown, want one of mac, mtu, addr, route, dns, search", key)
	}
	return nil
}

func parseRoute(v string) (Route, error) {
	dst, via, hasVia := strings.Cut(v, "@")
	var r Route
	var err error
	if r.Dst, err = netip.ParsePrefix(dst); err != nil {
		return Route{}, fmt.Errorf("destination: %w: want DEST/PREFIX[@VIA], e.g. 10.96.0.0/12@10.88.0.1", err)
	}
	if r.Dst != r.Dst.Masked() {
		return Route{}, fmt.Errorf("destination %s has host bits set: want %s", r.Dst, r.Dst.Masked())
	}
	if hasVia {
		if r.Via, err = netip.ParseAddr(via); err != nil {
			return Route{}, fmt.Errorf("next hop: %w", err)
		}
		if r.Via.Is4() != r.Dst.Addr().Is4() {
			return Route{}, fmt.Errorf("next hop %s and destination %s are of different address families", r.Via, r.Dst)
		}
	}
	return r, nil
}

// check verifies that the gateway and every next hop are reachable on the
// link: inside an interface address's prefix, inside an on-link route, or
// IPv6 link-local.
func (n *NetConfig) check() error {
	onLink := append([]netip.Prefix{n.Address.Masked()}, n.Addresses...)
	for _, r := range n.Routes {
		if !r.Via.IsValid() {
			onLink = append(onLink, r.Dst)
		}
	}
	reachable := func(a netip.Addr) bool {
		if a.Is6() && a.IsLinkLocalUnicast() {
			return true
		}
		for _, p := range onLink {
			if p.Masked().Contains(a) {
				return true
			}
		}
		return false
	}
	if n.Gateway.IsValid() && !reachable(n.Gateway) {
		return fmt.Errorf("gateway %s is outside %s: want a gateway on the guest's subnet, or add an on-link route=%s/%d",
			n.Gateway, n.Address.Masked(), n.Gateway, n.Gateway.BitLen())
	}
	for _, r := range n.Routes {
		if r.Via.IsValid() && !reachable(r.Via) {
			return fmt.Errorf("route=%s: next hop %s is not on the link (not inside %s, another addr= or an on-link route)", r, r.Via, n.Address.Masked())
		}
	}
	return nil
}

// String formats n in the syntax ParseNetConfig reads, positional fields
// first, then mac, mtu, addr, route, dns and search in that order; empty
// trailing positional fields are left out. ParseNetConfig(n.String())
// yields n again.
func (n *NetConfig) String() string {
	pos := []string{n.Address.String(), "", ""}
	if n.Gateway.IsValid() {
		pos[1] = n.Gateway.String()
	}
	if n.DNS.IsValid() {
		pos[2] = n.DNS.String()
	}
	for len(pos) > 1 && pos[len(pos)-1] == "" {
		pos = pos[:len(pos)-1]
	}
	fields := pos
	if n.MAC != nil {
		fields = append(fields, netKeyMAC+"="+n.MAC.String())
	}
	if n.MTU != 0 {
		fields = append(fields, netKeyMTU+"="+strconv.Itoa(n.MTU))
	}
	for _, a := range n.Addresses {
		fields = append(fields, netKeyAddr+"="+a.String())
	}
	for _, r := range n.Routes {
		fields = append(fields, netKeyRoute+"="+r.String())
	}
	for _, d := range n.MoreDNS {
		fields = append(fields, netKeyDNS+"="+d.String())
	}
	for _, s := range n.Search {
		fields = append(fields, netKeySearch+"="+s)
	}
	return strings.Join(fields, ",")
}

// Nameservers returns DNS followed by MoreDNS, leaving out an invalid DNS.
func (n *NetConfig) Nameservers() []netip.Addr {
	var out []netip.Addr
	if n.DNS.IsValid() {
		out = append(out, n.DNS)
	}
	return append(out, n.MoreDNS...)
}
