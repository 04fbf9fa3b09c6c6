package sysinit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linkPollInterval is how often waitForLink lists links.
const linkPollInterval = 10 * time.Millisecond

// bringUpLoopback sets lo up.
func bringUpLoopback() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// waitForLink returns the first (lowest-index) link other than lo, polling
// until one appears or ctx ends.
func waitForLink(ctx context.Context) (netlink.Link, error) {
	t := time.NewTicker(linkPollInterval)
	defer t.Stop()
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("list links: %w", err)
		}
		sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Index < links[j].Attrs().Index })
		for _, l := range links {
			if l.Attrs().Flags&net.FlagLoopback == 0 && l.Attrs().Name != "lo" {
				return l, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// waitForCarrier polls until link reports IFF_LOWER_UP (carrier present).
// With the carrier on when the link is set up, the kernel attaches the
// transmit queue at once, so the link is usable; the operational state
// ("up" in /sys/class/net/*/operstate) follows only when linkwatch runs,
// up to a second later, so it is not waited for.
func waitForCarrier(ctx context.Context, link netlink.Link) error {
	t := time.NewTicker(linkPollInterval)
	defer t.Stop()
	for {
		l, err := netlink.LinkByIndex(link.Attrs().Index)
		if err != nil {
			return fmt.Errorf("read state of %s: %w", link.Attrs().Name, err)
		}
		if l.Attrs().RawFlags&unix.IFF_LOWER_UP != 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s is set up but has no carrier (flags %v): %w", link.Attrs().Name, l.Attrs().Flags, ctx.Err())
		case <-t.C:
		}
	}
}

// configureLink applies n to link: it picks the interface by n.MAC (see
// pickLink), sets the MTU, adds n.Address and n.Addresses, sets it up, adds
// n.Routes (on-link ones first) and the default route via n.Gateway. It
// returns the link it configured.
func configureLink(link netlink.Link, n *NetConfig) (netlink.Link, error) {
	link, err := pickLink(link, n.MAC)
	if err != nil {
		return nil, err
	}
	name := link.Attrs().Name
	if n.MTU != 0 && link.Attrs().MTU != n.MTU {
		if err := netlink.LinkSetMTU(link, n.MTU); err != nil {
			return nil, fmt.Errorf("set mtu of %s to %d bytes: %w", name, n.MTU, err)
		}
	}
	for _, p := range append([]netip.Prefix{n.Address}, n.Addresses...) {
		addr := &netlink.Addr{IPNet: &net.IPNet{
			IP:   p.Addr().AsSlice(),
			Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
		}}
		if p.Addr().Is6() {
			// No duplicate address detection: the address is the pod's,
			// already checked by the CNI plugin on the host side.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, addr); err != nil {
			return nil, fmt.Errorf("add address %s to %s: %w", p, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set %s up: %w", name, err)
	}
	for _, r := range orderRoutes(n.Routes) {
		if err := netlink.RouteAdd(netlinkRoute(link, r)); err != nil {
			return nil, fmt.Errorf("add route %s dev %s: %w", r, name, err)
		}
	}
	if n.Gateway.IsValid() {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: n.Gateway.AsSlice()}
		if err := netlink.RouteAdd(route); err != nil {
			return nil, fmt.Errorf("add default route via %s dev %s: %w", n.Gateway, name, err)
		}
	}
	return link, nil
}

// pickLink returns the link whose hardware address is mac, or, when no link
// has it, first after giving it mac. With a nil mac it returns first.
func pickLink(first netlink.Link, mac net.HardwareAddr) (netlink.Link, error) {
	if mac == nil || bytes.Equal(first.Attrs().HardwareAddr, mac) {
		return first, nil
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if bytes.Equal(l.Attrs().HardwareAddr, mac) {
			return l, nil
		}
	}
	if err := netlink.LinkSetHardwareAddr(first, mac); err != nil {
		return nil, fmt.Errorf("no interface has mac %s, and setting it on %s failed: %w", mac, first.Attrs().Name, err)
	}
	return netlink.LinkByIndex(first.Attrs().Index)
}

// orderRoutes returns routes with the on-link ones first, each group in
// its given order, so that next hops reached through an on-link route
// (Calico's 169.254.1.1) are reachable when their routes are added.
func orderRoutes(routes []Route) []Route {
	out := make([]Route, 0, len(routes))
	for _, r := range routes {
		if !r.Via.IsValid() {
			out = append(out, r)
		}
	}
	for _, r := range routes {
		if r.Via.IsValid() {
			out = append(out, r)
		}
	}
	return out
}

// netlinkRoute turns r into a route through link: scope link without a
// next hop, universe scope with one.
func netlinkRoute(link netlink.Link, r Route) *netlink.Route {
	nr := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst: &net.IPNet{
			IP:   r.Dst.Addr().AsSlice(),
			Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen()),
		},
		Scope: netlink.SCOPE_UNIVERSE,
	}
	if r.Via.IsValid() {
		nr.Gw = r.Via.AsSlice()
	} else {
		nr.Scope = netlink.SCOPE_LINK
	}
	return nr
}

// setupNetwork brings lo up and, when n is set, configures the first other
// link. It returns that link's name ("" without n).
func setupNetwork(ctx context.Context, n *NetConfig, timeout time.Duration, modules []ModuleResult) (string, error) {
	if err := bringUpLoopback(); err != nil {
		return "", err
	}
	if n == nil {
		return "", nil
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	link, err := waitForLink(wctx)
	if errors.Is(err, context.DeadlineExceeded) {
		msg := fmt.Sprintf("no network interface besides lo appeared within %v although %s is set: give the VM a virtio-net-pci device", timeout, KeyNet)
		if failed := failedModules(modules); failed != "" {
			msg += "; these modules failed to load: " + failed
		}
		return "", fmt.Errorf("%s: %w", msg, errdefs.ErrUnavailable)
	}
	if err != nil {
		return "", fmt.Errorf("wait for network interface: %w", err)
	}
	if link, err = configureLink(link, n); err != nil {
		return "", err
	}
	if err := waitForCarrier(wctx, link); err != nil {
		return "", fmt.Errorf("wait for carrier: %w: check the VM's network backend", err)
	}
	return link.Attrs().Name, nil
}

func failedModules(results []ModuleResult) string {
	var failed []string
	for _, r := range results {
		if r.Err != nil {
			failed = append(failed, r.Err.Error())
		}
	}
	return strings.Join(failed, "; ")
}

// resolvConf returns the /etc/resolv.conf text for n: one nameserver line
// per resolver (DNS, then MoreDNS) and a search line if n.Search is set;
// "" when n has neither.
func resolvConf(n *NetConfig) string {
	if n == nil {
		return ""
	}
	var b strings.Builder
	for _, a := range n.Nameservers() {
		b.WriteString("nameserver " + a.String() + "\n")
	}
	if len(n.Search) > 0 {
		b.WriteString("search " + strings.Join(n.Search, " ") + "\n")
	}
	return b.String()
}

// writeResolvConf writes /etc/resolv.conf (see resolvConf), if n names any
// resolver or search domain.
func writeResolvConf(n *NetConfig) error {
	s := resolvConf(n)
	if s == "" {
		return nil
	}
	if err := os.MkdirAll("/etc", 0o755); err != nil {
		return fmt.Errorf("create /etc: %w", err)
	}
	if err := os.WriteFile("/etc/resolv.conf", []byte(s), 0o644); err != nil {
		return fmt.Errorf("write /etc/resolv.conf: %w", err)
	}
	return nil
}

// readNetFWCfg reads the fw_cfg item FWCfgNet below root (fwCfgRoot in
// the guest) and parses it. It returns nil, nil when the item is absent.
func readNetFWCfg(root string) (*NetConfig, error) {
	p := filepath.Join(root, FWCfgNet, "raw")
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read fw_cfg item %s: %w", FWCfgNet, err)
	}
	n, err := ParseNetConfig(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("parse fw_cfg item %s (%q): %w: %w", FWCfgNet, b, err, errdefs.ErrInvalidArgument)
	}
	return n, nil
}

// writeHosts writes /etc/hosts with the localhost names and, if set, the
// hostname on 127.0.1.1 (Debian's convention).
func writeHosts(hostname string) error {
	if err := os.MkdirAll("/etc", 0o755); err != nil {
		return fmt.Errorf("create /etc: %w", err)
	}
	s := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if hostname != "" {
		s += "127.0.1.1\t" + hostname + "\n"
	}
	if err := os.WriteFile("/etc/hosts", []byte(s), 0o644); err != nil {
		return fmt.Errorf("write /etc/hosts: %w", err)
	}
	return nil
}
