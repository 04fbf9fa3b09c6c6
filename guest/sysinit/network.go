package sysinit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
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

// configureLink gives link the address of n, sets it up and adds the
// default route via n.Gateway if set.
func configureLink(link netlink.Link, n *NetConfig) error {
	name := link.Attrs().Name
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   n.Address.Addr().AsSlice(),
		Mask: net.CIDRMask(n.Address.Bits(), n.Address.Addr().BitLen()),
	}}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("add address %s to %s: %w", n.Address, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	if n.Gateway.IsValid() {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: n.Gateway.AsSlice()}
		if err := netlink.RouteAdd(route); err != nil {
			return fmt.Errorf("add default route via %s dev %s: %w", n.Gateway, name, err)
		}
	}
	return nil
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
	if err := configureLink(link, n); err != nil {
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

// writeResolvConf writes /etc/resolv.conf naming dns, if dns is set.
func writeResolvConf(n *NetConfig) error {
	if n == nil || !n.DNS.IsValid() {
		return nil
	}
	if err := os.MkdirAll("/etc", 0o755); err != nil {
		return fmt.Errorf("create /etc: %w", err)
	}
	if err := os.WriteFile("/etc/resolv.conf", []byte("nameserver "+n.DNS.String()+"\n"), 0o644); err != nil {
		return fmt.Errorf("write /etc/resolv.conf: %w", err)
	}
	return nil
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
