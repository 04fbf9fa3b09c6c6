package transport

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/mdlayher/vsock"
)

// Connections the guest opens toward the host (transport/forward uses
// them to carry network.forwards without a guest network):
//
//   - virtio-serial: a yamux stream the guest opens on the session the
//     host started (HostOpener in the guest, GuestAcceptor on the host).
//   - vsock and hybrid vsock: an AF_VSOCK connection from the guest to the
//     host (CID 2) on port GuestVsockPort(guest CID) (DialHostVsock). With
//     vhost-vsock the host listens on that AF_VSOCK port and accepts only
//     the guest's CID (ListenVsockFrom); with Cloud Hypervisor's hybrid
//     vsock the VMM connects to the host unix socket "<vsock socket>_<port>"
//     (ListenHybridVsock).
//
// The port is the guest's own CID because a host AF_VSOCK port is shared
// by every VM on the host while CIDs are unique per host: each sandbox's
// shim gets a port no other sandbox uses, and the guest needs nothing but
// its CID to find it.

// GuestVsockPort is the host vsock port a guest with context ID cid
// connects to for connections it opens toward the host: cid itself.
func GuestVsockPort(cid uint32) uint32 { return cid }

// GuestAcceptor is implemented by the host Dialer of a transport that
// carries connections opened by the guest (virtio-serial).
type GuestAcceptor interface {
	// GuestListener returns a listener whose Accept returns each
	// connection the guest opens. Closing it stops accepting; the
	// transport stays up. Accept fails with net.ErrClosed once the
	// listener or the transport is closed.
	GuestListener() net.Listener
}

// GuestListener implements GuestAcceptor: Accept returns the yamux
// streams the guest opens on this session.
func (d *virtioSerialDialer) GuestListener() net.Listener {
	ctx, cancel := context.WithCancel(context.Background())
	return &guestStreamListener{d: d, ctx: ctx, cancel: cancel}
}

// guestStreamListener accepts guest-opened yamux streams.
type guestStreamListener struct {
	d      *virtioSerialDialer
	ctx    context.Context
	cancel context.CancelFunc
}

func (l *guestStreamListener) Accept() (net.Conn, error) {
	s, err := l.d.sess.AcceptStreamWithContext(l.ctx)
	if err != nil {
		if l.ctx.Err() != nil || l.d.sess.IsClosed() {
			return nil, fmt.Errorf("accept guest stream on %s: %w", l.d.path, net.ErrClosed)
		}
		return nil, fmt.Errorf("accept guest stream on %s: %w", l.d.path, err)
	}
	return stream{s}, nil
}

func (l *guestStreamListener) Close() error { l.cancel(); return nil }

func (l *guestStreamListener) Addr() net.Addr { return l.d.sess.LocalAddr() }

// HostOpener is implemented by the guest listener of a transport on
// which the guest can open connections toward the host (virtio-serial).
type HostOpener interface {
	// OpenHost opens a connection to the host on the current session.
	OpenHost(ctx context.Context) (net.Conn, error)
}

// OpenHost implements HostOpener: it opens a yamux stream on the current
// host session. It fails, wrapping errdefs.ErrUnavailable, when no host
// is connected, and with net.ErrClosed after Close.
func (l *virtioSerialListener) OpenHost(ctx context.Context) (net.Conn, error) {
	l.mu.Lock()
	sess := l.sess
	l.mu.Unlock()
	if l.isClosed() {
		return nil, fmt.Errorf("open a stream to the host on %s: %w", l.addr, net.ErrClosed)
	}
	if sess == nil || sess.IsClosed() {
		return nil, fmt.Errorf("open a stream to the host on %s: no host is connected: %w", l.addr, errdefs.ErrUnavailable)
	}
	type result struct {
		s   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := sess.OpenStream()
		if err != nil {
			ch <- result{nil, err}
			return
		}
		ch <- result{stream{s}, nil}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("open a stream to the host on %s: %w: %w", l.addr, r.err, errdefs.ErrUnavailable)
		}
		return r.s, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, fmt.Errorf("open a stream to the host on %s: %w", l.addr, ctx.Err())
	}
}

// DialHostVsock is the guest side of a connection toward the host over
// AF_VSOCK (vhost-vsock or Cloud Hypervisor's hybrid vsock): it dials the
// host, CID 2, on port GuestVsockPort(this guest's CID). Errors name the
// CID and port with a hint.
func DialHostVsock(ctx context.Context) (net.Conn, error) {
	cid, err := vsock.ContextID()
	if err != nil {
		return nil, fmt.Errorf("dial the host over vsock: read this guest's CID: %w (%s)", errnoOf(err), vsockHint(err, 0))
	}
	port := GuestVsockPort(cid)
	c, err := vsock.DialContext(ctx, vsock.Host, port, nil)
	if err != nil {
		return nil, fmt.Errorf("dial the host over vsock: cid %d port %d: %w (%s)", vsock.Host, port, errnoOf(err), hostVsockHint(err))
	}
	return c, nil
}

// hostVsockHint explains a failed guest-to-host vsock dial.
func hostVsockHint(err error) string {
	if isVsockNotReady(err) {
		return "the shim does not listen on this port: it serves forwards only with network.mode = \"none\" and network.forwards"
	}
	return vsockHint(err, vsock.Host)
}

// ListenHybridVsock is the host side of guest-opened connections with
// Cloud Hypervisor's hybrid vsock: it listens on the unix socket
// "<socketPath>_<port>", where the VMM connects for each guest connection
// to the host's vsock port (socketPath being VmConfig vsock.socket). A
// stale socket file at that path is removed first. Connections carry the
// guest's bytes from the first byte (no CONNECT line in this direction).
func ListenHybridVsock(socketPath string, port uint32) (net.Listener, error) {
	path := socketPath + "_" + strconv.FormatUint(uint64(port), 10)
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("listen for guest vsock port %d: remove stale %s: %w", port, path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen for guest vsock port %d on %s: %w", port, path, err)
	}
	return l, nil
}

// vsockListenFunc listens on a host AF_VSOCK port; tests replace it.
type vsockListenFunc func(port uint32) (net.Listener, error)

// ListenVsockFrom is the host side of guest-opened connections with
// vhost-vsock: it listens on the host's AF_VSOCK port and accepts only
// connections from guest context ID cid; connections from any other CID
// are closed at once (another VM reaching for this sandbox's port). Use
// port GuestVsockPort(cid). Errors name the port and the errno with a
// hint.
func ListenVsockFrom(port, cid uint32) (net.Listener, error) {
	return listenVsockFrom(port, cid, func(port uint32) (net.Listener, error) { return vsock.Listen(port, nil) })
}

func listenVsockFrom(port, cid uint32, listen vsockListenFunc) (net.Listener, error) {
	l, err := listen(port)
	if err != nil {
		return nil, fmt.Errorf("listen on host vsock port %d for guest cid %d: %w (%s)", port, cid, errnoOf(err), vsockHint(err, cid))
	}
	return &cidListener{Listener: l, cid: cid}, nil
}

// cidListener accepts only connections from one vsock CID.
type cidListener struct {
	net.Listener
	cid uint32

	mu       sync.Mutex
	rejected int // connections from other CIDs, for tests and errors
}

func (l *cidListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if a, ok := c.RemoteAddr().(*vsock.Addr); ok && a.ContextID == l.cid {
			return c, nil
		}
		c.Close()
		l.mu.Lock()
		l.rejected++
		l.mu.Unlock()
	}
}
