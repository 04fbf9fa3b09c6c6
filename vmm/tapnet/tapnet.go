// Package tapnet plumbs a VM's NIC into a pod network namespace, the way
// Kata Containers' "tcfilter" model does: CNI has put a veth with the pod's
// addresses and routes into the namespace; Setup creates a tap device next
// to it and joins the two with TC ingress qdiscs and mirred redirect
// filters in both directions, so every frame arriving on the veth leaves
// through the tap (to the VM) and every frame the VM writes to the tap
// leaves through the veth. The guest NIC takes the veth's MAC and
// addresses (Endpoint.Guest), so to the pod network the VM is the pod.
//
// The tap is opened from inside the namespace and handed back as an open
// file (/dev/net/tun with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) for the VMM
// (vmm.Tap.File): QEMU inherits it ("-netdev tap,fd=3"), Cloud Hypervisor
// receives it over its API socket (vm.add-net with SCM_RIGHTS). The VMM
// itself stays in the host network namespace. The tap is not persistent: it goes away when the
// last file on it is closed, and Teardown removes it and the filters
// explicitly.
package tapnet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/guest/sysinit"
	"github.com/cofferhq/coffer/vmm"
)

// DefaultTapName is the tap's name inside the pod network namespace when
// Options.TapName is empty (each pod has its own namespace, so one fixed
// name does not collide).
const DefaultTapName = "tap0_cc"

// TunDevice is the tun/tap clone device.
const TunDevice = "/dev/net/tun"

// ingressHandle is the handle of an ingress qdisc, ffff:0.
var ingressHandle = netlink.MakeHandle(0xffff, 0)

// TunUnavailableError is returned by Setup when the tun/tap driver cannot be
// used here: TunDevice is missing (ENOENT), the driver is absent (ENODEV,
// ENXIO) or access is denied (EACCES, EPERM). It matches
// errdefs.ErrUnavailable through errors.Is. The shim should then publish a
// warning event and fall back to user-mode networking (vmm.NetworkUser).
type TunUnavailableError struct {
	// Path is the device that could not be used, TunDevice.
	Path string
	// Err is the error from opening it or from TUNSETIFF.
	Err error
}

// Error names the device, the cause and the fix.
func (e *TunUnavailableError) Error() string {
	return fmt.Sprintf("tap networking unavailable: %s: %v: load the tun module (modprobe tun) and run the shim as root with CAP_NET_ADMIN, or the pod gets user-mode networking only", e.Path, e.Err)
}

// Unwrap returns Err and errdefs.ErrUnavailable.
func (e *TunUnavailableError) Unwrap() []error { return []error{e.Err, errdefs.ErrUnavailable} }

// Options configures Setup.
type Options struct {
	// NetNSPath is the pod's network namespace: a bind-mounted file such as
	// /var/run/netns/cni-<uuid>, or /proc/<pid>/ns/net. Required.
	NetNSPath string
	// Interface is the veth CNI created in the namespace. Empty means the
	// only interface there besides lo (CRI names it eth0).
	Interface string
	// TapName is the tap's name, at most vmm.MaxInterfaceNameLen bytes.
	// Empty means DefaultTapName.
	TapName string
}

// Endpoint is a VM NIC plumbed into a pod network namespace by Setup.
type Endpoint struct {
	// NetNSPath is Options.NetNSPath.
	NetNSPath string
	// Interface is the veth's name ("eth0").
	Interface string
	// TapName is the tap's name in the namespace.
	TapName string
	// Tap is the open tap queue. Pass it to the VMM (VMMTap); Close closes
	// it.
	Tap *os.File
	// Guest is what the guest NIC must be configured with: the veth's
	// address(es), MAC, MTU, default gateway and other routes. Its DNS
	// fields are empty: a pod's resolvers are not in its network namespace
	// but in the pod's DNS config (CRI writes the sandbox's resolv.conf).
	// Pass it to the guest as the fw_cfg item sysinit.FWCfgNet
	// (Guest.String()) or the cc.net kernel parameter.
	Guest sysinit.NetConfig
}

// VMMTap returns the tap for vmm.Network{Mode: vmm.NetworkTap, Tap: ...}:
// the open file, the tap's name and namespace, the veth's MAC and MTU.
func (e *Endpoint) VMMTap() *vmm.Tap {
	t := &vmm.Tap{Name: e.TapName, File: e.Tap, NetNS: e.NetNSPath, MTU: e.Guest.MTU}
	if e.Guest.MAC != nil {
		t.MAC = e.Guest.MAC.String()
	}
	return t
}

// Close closes the tap file and removes the tap and the filters (Teardown).
// Call it after the VM has exited, or when the VMM was never started.
func (e *Endpoint) Close() error {
	var errs []error
	if e.Tap != nil {
		if err := e.Tap.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, fmt.Errorf("close tap %s: %w", e.TapName, err))
		}
	}
	errs = append(errs, Teardown(e.NetNSPath, e.Interface, e.TapName))
	return errors.Join(errs...)
}

// Setup creates a tap in the pod network namespace at opts.NetNSPath,
// redirects all traffic between it and the veth with TC (an ingress qdisc
// on each and a u32 match-all filter with a mirred egress redirect to the
// other), and reads the veth's configuration for the guest. The tap gets
// the veth's MTU and is set up.
//
// Errors: *TunUnavailableError (errdefs.ErrUnavailable) when the tun
// driver cannot be used; errdefs.ErrNotFound when the namespace or the
// veth does not exist; errdefs.ErrFailedPrecondition when the namespace
// has no single candidate veth, the veth has no global address, or a link
// named TapName already exists; other errors name the netlink step. On
// error nothing is left behind.
func Setup(ctx context.Context, opts Options) (_ *Endpoint, retErr error) {
	if opts.NetNSPath == "" {
		return nil, fmt.Errorf("set up pod network: no network namespace path: %w", errdefs.ErrInvalidArgument)
	}
	tapName := opts.TapName
	if tapName == "" {
		tapName = DefaultTapName
	}
	if len(tapName) > vmm.MaxInterfaceNameLen {
		return nil, fmt.Errorf("set up pod network: tap name %q is %d bytes, want at most %d: %w", tapName, len(tapName), vmm.MaxInterfaceNameLen, errdefs.ErrInvalidArgument)
	}
	ns, err := netns.GetFromPath(opts.NetNSPath)
	if err != nil {
		return nil, fmt.Errorf("set up pod network: open network namespace %s: %w", opts.NetNSPath, classify(err))
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("set up pod network: netlink in %s: %w", opts.NetNSPath, err)
	}
	defer h.Close()

	veth, err := findVeth(h, opts.Interface, tapName)
	if err != nil {
		return nil, fmt.Errorf("set up pod network in %s: %w", opts.NetNSPath, err)
	}
	guest, err := readGuestConfig(h, veth)
	if err != nil {
		return nil, fmt.Errorf("set up pod network in %s: %w", opts.NetNSPath, err)
	}
	ep := &Endpoint{NetNSPath: opts.NetNSPath, Interface: veth.Attrs().Name, TapName: tapName, Guest: *guest}

	if _, err := h.LinkByName(tapName); err == nil {
		return nil, fmt.Errorf("set up pod network in %s: a link named %s already exists (left by an earlier VM?): remove it or choose another tap name: %w", opts.NetNSPath, tapName, errdefs.ErrFailedPrecondition)
	}
	if ep.Tap, err = openTap(ns, tapName); err != nil {
		return nil, fmt.Errorf("set up pod network in %s: %w", opts.NetNSPath, err)
	}
	defer func() {
		if retErr != nil {
			if err := ep.Close(); err != nil {
				log.G(ctx).WithError(err).Warn("undo a failed pod network setup")
			}
		}
	}()
	tap, err := h.LinkByName(tapName)
	if err != nil {
		return nil, fmt.Errorf("set up pod network in %s: find the new tap %s: %w", opts.NetNSPath, tapName, err)
	}
	if err := h.LinkSetMTU(tap, veth.Attrs().MTU); err != nil {
		return nil, fmt.Errorf("set up pod network in %s: set mtu of %s to %d: %w", opts.NetNSPath, tapName, veth.Attrs().MTU, err)
	}
	if err := h.LinkSetUp(tap); err != nil {
		return nil, fmt.Errorf("set up pod network in %s: set %s up: %w", opts.NetNSPath, tapName, err)
	}
	if err := redirect(h, veth, tap); err != nil {
		return nil, fmt.Errorf("set up pod network in %s: redirect %s to %s: %w", opts.NetNSPath, veth.Attrs().Name, tapName, err)
	}
	if err := redirect(h, tap, veth); err != nil {
		return nil, fmt.Errorf("set up pod network in %s: redirect %s to %s: %w", opts.NetNSPath, tapName, veth.Attrs().Name, err)
	}
	log.G(ctx).WithField("netns", opts.NetNSPath).WithField("veth", ep.Interface).WithField("tap", tapName).
		WithField("guest", ep.Guest.String()).Debug("pod network plumbed")
	return ep, nil
}

// Teardown removes what Setup created in the namespace at netnsPath: the
// tap named tapName and the ingress qdisc (with its filter) on the veth
// iface. It is idempotent: a missing namespace, tap, veth or qdisc is not an
// error, so it also cleans up after a shim that died. It does not close an
// Endpoint's file: use Endpoint.Close for that.
func Teardown(netnsPath, iface, tapName string) error {
	ns, err := netns.GetFromPath(netnsPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // the namespace, and everything in it, is gone
	}
	if err != nil {
		return fmt.Errorf("tear down pod network: open network namespace %s: %w", netnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("tear down pod network: netlink in %s: %w", netnsPath, err)
	}
	defer h.Close()
	var errs []error
	if tap, err := h.LinkByName(tapName); err == nil {
		if err := h.LinkDel(tap); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("tear down pod network in %s: delete tap %s: %w", netnsPath, tapName, err))
		}
	}
	if iface != "" {
		if veth, err := h.LinkByName(iface); err == nil {
			q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: veth.Attrs().Index, Handle: ingressHandle, Parent: netlink.HANDLE_INGRESS}}
			if err := h.QdiscDel(q); err != nil && !isGone(err) {
				errs = append(errs, fmt.Errorf("tear down pod network in %s: delete ingress qdisc of %s: %w", netnsPath, iface, err))
			}
		}
	}
	return errors.Join(errs...)
}

// openTap creates the tap tapName in ns and returns its open queue. The
// tun device binds a new tap to the network namespace of the thread that
// issues TUNSETIFF, so this runs in ns (inNetns).
func openTap(ns netns.NsHandle, tapName string) (*os.File, error) {
	var f *os.File
	err := inNetns(ns, func() error {
		var err error
		f, err = createTap(tapName)
		return err
	})
	return f, err
}

// inNetns runs f on a locked OS thread switched into ns and returns f's
// error, or "get the current network namespace: ..." / "enter the pod
// network namespace: ..." when the switch fails (f does not run then). If
// the thread cannot switch back, it is left locked and dies with its
// goroutine instead of running other goroutines in the wrong namespace. f
// may end its goroutine (t.FailNow in a test): inNetns then returns nil.
func inNetns(ns netns.NsHandle, f func() error) error {
	done := make(chan error, 1)
	go func() {
		var err error
		defer func() { done <- err }() // also when f ends its goroutine (runtime.Goexit)
		runtime.LockOSThread()
		orig, gerr := netns.Get()
		if gerr != nil {
			runtime.UnlockOSThread()
			err = fmt.Errorf("get the current network namespace: %w", gerr)
			return
		}
		defer orig.Close()
		if serr := netns.Set(ns); serr != nil {
			runtime.UnlockOSThread()
			err = fmt.Errorf("enter the pod network namespace: %w", serr)
			return
		}
		defer func() {
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
		}()
		err = f()
	}()
	return <-done
}

// createTap creates a non-persistent tap in the calling thread's network
// namespace (open TunDevice, TUNSETIFF with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR,
// one queue) and returns the open queue. IFF_TUN_EXCL makes an existing
// device of that name an error rather than reused.
func createTap(name string) (*os.File, error) {
	fd, err := unix.Open(TunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if tunUnavailable(err) {
			return nil, &TunUnavailableError{Path: TunDevice, Err: err}
		}
		return nil, fmt.Errorf("open %s: %w", TunDevice, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap name %q: %w: %w", name, err, errdefs.ErrInvalidArgument)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_TUN_EXCL)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		switch {
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("create tap %s: a device of that name exists: %w", name, errdefs.ErrAlreadyExists)
		case tunUnavailable(err):
			return nil, &TunUnavailableError{Path: TunDevice, Err: fmt.Errorf("TUNSETIFF %s: %w", name, err)}
		}
		return nil, fmt.Errorf("create tap %s (TUNSETIFF IFF_TAP|IFF_NO_PI|IFF_VNET_HDR): %w", name, err)
	}
	// The Go runtime polls a non-blocking file; a tun fd must be switched
	// only after TUNSETIFF (golang/go#30426). QEMU sets its own flags.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set tap %s non-blocking: %w", name, err)
	}
	return os.NewFile(uintptr(fd), TunDevice), nil
}

// redirect sends every frame arriving on from out of to: an ingress qdisc
// on from, and a u32 filter matching all protocols whose action is a mirred
// egress redirect to to (TC_ACT_STOLEN: from's own stack never sees the
// frame). u32 rather than matchall because more kernels have it.
func redirect(h *netlink.Handle, from, to netlink.Link) error {
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: from.Attrs().Index, Handle: ingressHandle, Parent: netlink.HANDLE_INGRESS}}
	if err := h.QdiscReplace(q); err != nil {
		return fmt.Errorf("add ingress qdisc to %s: %w", from.Attrs().Name, err)
	}
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: from.Attrs().Index,
			Parent:    ingressHandle,
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		Actions: []netlink.Action{&netlink.MirredAction{
			ActionAttrs:  netlink.ActionAttrs{Action: netlink.TC_ACT_STOLEN},
			MirredAction: netlink.TCA_EGRESS_REDIR,
			Ifindex:      to.Attrs().Index,
		}},
	}
	if err := h.FilterAdd(f); err != nil {
		return fmt.Errorf("add u32 redirect filter on %s: %w", from.Attrs().Name, err)
	}
	return nil
}

// tunUnavailable reports whether err means the tun driver cannot be used.
func tunUnavailable(err error) bool {
	for _, e := range []error{unix.ENOENT, unix.ENODEV, unix.ENXIO, unix.EACCES, unix.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// isGone reports whether a delete failed because the object is already
// gone.
func isGone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL)
}

// classify adds errdefs.ErrNotFound to a missing-namespace error.
func classify(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	}
	return err
}
