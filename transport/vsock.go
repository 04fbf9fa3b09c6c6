package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/mdlayher/vsock"
)

// vsockRetryInterval is how long ConnectVsock waits between dials.
const vsockRetryInterval = 50 * time.Millisecond

// vsockDialFunc dials one AF_VSOCK connection; tests replace it.
type vsockDialFunc func(ctx context.Context, cid, port uint32) (net.Conn, error)

func dialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) {
	c, err := vsock.DialContext(ctx, cid, port, nil)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ConnectVsock is the host side of the vsock transport: it dials the agent
// at guest context ID cid and port (DefaultVsockPort for cc-agent) until
// the agent accepts, retrying every 50 ms while the error means "not
// there yet": ECONNREFUSED or ECONNRESET (agent not listening yet), ENODEV
// (no guest with this CID yet), ETIMEDOUT (guest did not answer). That
// first connection is kept and returned by the first Dial, so the agent
// never sees an empty probe connection.
//
// When ctx ends first the error reads "dial vsock cid N port P:
// connection refused (agent not listening yet; gave up after K attempts in
// D)" and wraps the errno and ctx.Err(). Other errors (no vsock support,
// EACCES on /dev/vhost-vsock) fail at once.
//
// Each later Dial makes one new vsock connection (*vsock.Conn, which
// supports CloseWrite); Close closes the kept connection if no Dial took it.
func ConnectVsock(ctx context.Context, cid, port uint32) (Dialer, error) {
	return connectVsock(ctx, cid, port, dialVsock, vsockRetryInterval)
}

func connectVsock(ctx context.Context, cid, port uint32, dial vsockDialFunc, interval time.Duration) (Dialer, error) {
	once := func(ctx context.Context) (net.Conn, error) { return dial(ctx, cid, port) }
	c, g, err := retryDial(ctx, interval, once, isVsockNotReady)
	switch {
	case err != nil:
		return nil, vsockError("dial", cid, port, err)
	case g == nil:
		return &keptDialer{what: fmt.Sprintf("vsock cid %d port %d", cid, port), dial: redialVsock(cid, port, dial), first: c}, nil
	case g.last == nil:
		return nil, fmt.Errorf("dial vsock cid %d port %d: %w", cid, port, ctx.Err())
	}
	return nil, fmt.Errorf("dial vsock cid %d port %d: %w (%s; gave up after %d attempts in %s): %w",
		cid, port, errnoOf(g.last), vsockHint(g.last, cid), g.attempts, g.took, ctx.Err())
}

// redialVsock returns the Dial of a vsock Dialer: one new connection,
// with the error worded like ConnectVsock's.
func redialVsock(cid, port uint32, dial vsockDialFunc) dialOnce {
	return func(ctx context.Context) (net.Conn, error) {
		c, err := dial(ctx, cid, port)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("dial vsock cid %d port %d: %w", cid, port, ctx.Err())
			}
			return nil, vsockError("dial", cid, port, err)
		}
		return c, nil
	}
}

// isVsockNotReady reports whether a dial error means the guest or its
// agent is not up yet.
func isVsockNotReady(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ETIMEDOUT)
}

// vsockHint explains a vsock errno in Coffer's terms.
func vsockHint(err error, cid uint32) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return "agent not listening yet"
	case errors.Is(err, syscall.ENODEV):
		return fmt.Sprintf("no guest has CID %d: QEMU has not started its vhost-vsock-pci device, or the CID is wrong", cid)
	case errors.Is(err, syscall.ETIMEDOUT):
		return "the guest did not answer"
	case errors.Is(err, syscall.EAFNOSUPPORT):
		return "this kernel has no AF_VSOCK: load the vsock modules (vhost_vsock on the host, vmw_vsock_virtio_transport in a guest)"
	case errors.Is(err, syscall.EADDRINUSE):
		return "another process already listens on this port"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return "permission denied: run as root"
	default:
		return "unexpected vsock error"
	}
}

// errnoOf returns the errno inside err, or err itself.
func errnoOf(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// vsockError words a vsock failure: "dial vsock cid 3 port 1024:
// connection refused (agent not listening yet)".
func vsockError(op string, cid, port uint32, err error) error {
	return fmt.Errorf("%s vsock cid %d port %d: %w (%s)", op, cid, port, errnoOf(err), vsockHint(err, cid))
}

// ListenVsock is the guest side of the vsock transport: it listens on the
// given AF_VSOCK port (DefaultVsockPort for cc-agent; 0 picks a free port,
// see Addr) at this machine's context ID, using github.com/mdlayher/vsock.
// Accepted connections are *vsock.Conn and support CloseWrite. Errors name
// the port and the errno with a hint ("address already in use (another
// process already listens on this port)").
func ListenVsock(port uint32) (net.Listener, error) {
	l, err := vsock.Listen(port, nil)
	if err != nil {
		return nil, fmt.Errorf("listen on vsock port %d: %w (%s)", port, errnoOf(err), vsockHint(err, 0))
	}
	return l, nil
}
