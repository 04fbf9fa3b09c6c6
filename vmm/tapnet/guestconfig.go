package tapnet

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/guest/sysinit"
)

// findVeth returns the link named name, or, with name empty, the only link
// besides lo and the tap named tapName.
func findVeth(h *netlink.Handle, name, tapName string) (netlink.Link, error) {
	if name != "" {
		l, err := h.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("find interface %s: %w: %w", name, err, errdefs.ErrNotFound)
		}
		return l, nil
	}
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var found []netlink.Link
	var names []string
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || a.Name == tapName {
			continue
		}
		found = append(found, l)
		names = append(names, a.Name)
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, fmt.Errorf("no interface besides lo: has the CNI plugin run for this pod? %w", errdefs.ErrFailedPrecondition)
	}
	sort.Strings(names)
	return nil, fmt.Errorf("%d interfaces besides lo (%s): name the pod's veth in Options.Interface: %w",
		len(found), strings.Join(names, ", "), errdefs.ErrFailedPrecondition)
}

// readGuestConfig reads what the guest NIC must take over from the veth:
// its MAC and MTU, its global addresses (the first IPv4 one becomes
// Address), the default gateway of Address's family, and every other route
// through it except the kernel's connected-subnet routes. A default route
// of the other family becomes a ::/0 or 0.0.0.0/0 route.
func readGuestConfig(h *netlink.Handle, veth netlink.Link) (*sysinit.NetConfig, error) {
	name := veth.Attrs().Name
	n := &sysinit.NetConfig{MTU: veth.Attrs().MTU}
	if mac := veth.Attrs().HardwareAddr; len(mac) == 6 {
		n.MAC = append(net.HardwareAddr(nil), mac...)
	}
	addrs, err := h.AddrList(veth, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", name, err)
	}
	var prefixes []netip.Prefix
	for _, a := range addrs {
		if a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue // link-local IPv6 and the like: the guest makes its own
		}
		p, ok := toPrefix(a.IPNet)
		if !ok {
			continue
		}
		prefixes = append(prefixes, p)
	}
	if len(prefixes) == 0 {
		return nil, fmt.Errorf("interface %s has no global address: has the CNI plugin's IPAM run? %w", name, errdefs.ErrFailedPrecondition)
	}
	primary := 0
	for i, p := range prefixes {
		if p.Addr().Is4() {
			primary = i
			break
		}
	}
	n.Address = prefixes[primary]
	for i, p := range prefixes {
		if i != primary {
			n.Addresses = append(n.Addresses, p)
		}
	}

	routes, err := h.RouteList(veth, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list routes of %s: %w", name, err)
	}
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL || r.Table != unix.RT_TABLE_MAIN || r.Type != unix.RTN_UNICAST {
			continue
		}
		dst, isDefault := routeDst(r)
		if !dst.IsValid() {
			continue
		}
		via, _ := netip.AddrFromSlice(r.Gw)
		via = via.Unmap()
		if isDefault && via.IsValid() && !n.Gateway.IsValid() && via.Is4() == n.Address.Addr().Is4() {
			n.Gateway = via
			continue
		}
		n.Routes = append(n.Routes, sysinit.Route{Dst: dst, Via: via})
	}
	// Round-trip through the text form so that what the guest will parse
	// is known to be valid now, on the host.
	if _, err := sysinit.ParseNetConfig(n.String()); err != nil {
		return nil, fmt.Errorf("configuration of %s (%s) cannot be given to the guest: %w", name, n, err)
	}
	return n, nil
}

// routeDst returns r's destination and whether it is a default route. A
// nil Dst is a default route of r's family.
func routeDst(r netlink.Route) (netip.Prefix, bool) {
	if r.Dst == nil {
		if r.Family == netlink.FAMILY_V6 {
			return netip.MustParsePrefix("::/0"), true
		}
		return netip.MustParsePrefix("0.0.0.0/0"), true
	}
	p, ok := toPrefix(r.Dst)
	if !ok {
		return netip.Prefix{}, false
	}
	p = p.Masked()
	return p, p.Bits() == 0
}

// toPrefix converts an address with its mask, IPv4 in 4-byte form.
func toPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	if a.Is4() && bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones), true
}
