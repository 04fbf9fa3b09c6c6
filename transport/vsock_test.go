package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/vsock"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// vsockDialErr is what mdlayher/vsock returns for a failed connect.
func vsockDialErr(cid, port uint32, errno syscall.Errno) error {
	return &net.OpError{Op: "dial", Net: "vsock", Addr: &vsock.Addr{ContextID: cid, Port: port},
		Err: os.NewSyscallError("connect", errno)}
}

// scriptedDial fails with errs in turn, then returns fresh pipe ends.
type scriptedDial struct {
	mu    sync.Mutex
	errs  []syscall.Errno
	calls int
	conns []net.Conn
}

func (s *scriptedDial) dial(_ context.Context, cid, port uint32) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if len(s.errs) > 0 {
		errno := s.errs[0]
		s.errs = s.errs[1:]
		return nil, vsockDialErr(cid, port, errno)
	}
	c, peer := net.Pipe()
	peer.Close()
	s.conns = append(s.conns, c)
	return c, nil
}

func TestConnectVsockRetriesUntilAgentListens(t *testing.T) {
	s := &scriptedDial{errs: []syscall.Errno{syscall.ENODEV, syscall.ECONNRESET, syscall.ECONNREFUSED, syscall.ETIMEDOUT}}
	d, err := connectVsock(testCtx(t, 5*time.Second), 3, DefaultVsockPort, s.dial, time.Millisecond)
	require.NoError(t, err)
	require.Equal(t, 5, s.calls)

	c1, err := d.Dial(context.Background())
	require.NoError(t, err)
	require.Same(t, s.conns[0], c1, "the first Dial returns ConnectVsock's connection")
	require.Equal(t, 5, s.calls)

	c2, err := d.Dial(context.Background())
	require.NoError(t, err)
	require.Equal(t, 6, s.calls, "later Dials make new connections")
	require.Same(t, s.conns[1], c2)

	require.NoError(t, d.Close())
	_, err = d.Dial(context.Background())
	require.ErrorIs(t, err, net.ErrClosed)
}

func TestConnectVsockGivesUp(t *testing.T) {
	s := &scriptedDial{errs: make([]syscall.Errno, 1000)}
	for i := range s.errs {
		s.errs[i] = syscall.ECONNREFUSED
	}
	_, err := connectVsock(testCtx(t, 200*time.Millisecond), 3, 1024, s.dial, 10*time.Millisecond)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.ErrorContains(t, err, "dial vsock cid 3 port 1024: connection refused (agent not listening yet; gave up after ")
	require.Greater(t, s.calls, 5)
}

func TestConnectVsockPermanentError(t *testing.T) {
	s := &scriptedDial{errs: []syscall.Errno{syscall.EAFNOSUPPORT}}
	start := time.Now()
	_, err := connectVsock(testCtx(t, 5*time.Second), 3, 1024, s.dial, 10*time.Millisecond)
	require.ErrorIs(t, err, syscall.EAFNOSUPPORT)
	require.EqualError(t, err, "dial vsock cid 3 port 1024: address family not supported by protocol (this kernel has no AF_VSOCK: load the vsock modules (vhost_vsock on the host, vmw_vsock_virtio_transport in a guest))")
	require.Equal(t, 1, s.calls)
	require.Less(t, time.Since(start), time.Second)
}

func TestVsockDialAfterConnectFails(t *testing.T) {
	s := &scriptedDial{}
	d, err := connectVsock(testCtx(t, 5*time.Second), 3, 1024, s.dial, time.Millisecond)
	require.NoError(t, err)
	defer d.Close()
	_, err = d.Dial(context.Background()) // the kept connection
	require.NoError(t, err)
	s.errs = []syscall.Errno{syscall.ECONNRESET}
	_, err = d.Dial(context.Background())
	require.EqualError(t, err, "dial vsock cid 3 port 1024: connection reset by peer (agent not listening yet)")
}

// listenOrSkip listens with ListenVsock, skipping when this kernel has no
// AF_VSOCK at all.
func listenOrSkip(t *testing.T, port uint32) net.Listener {
	t.Helper()
	l, err := ListenVsock(port)
	if errors.Is(err, syscall.EAFNOSUPPORT) {
		t.Skipf("no AF_VSOCK in this kernel: %v", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

func TestListenVsock(t *testing.T) {
	l := listenOrSkip(t, 0)
	port := l.Addr().(*vsock.Addr).Port
	require.NotZero(t, port, "port 0 picks a free port")

	_, err := ListenVsock(port)
	require.ErrorIs(t, err, syscall.EADDRINUSE)
	require.ErrorContains(t, err, "address already in use (another process already listens on this port)")

	requireCloseUnblocksAccept(t, l)
}

// requireCloseUnblocksAccept checks that closing l makes a pending Accept
// return an error wrapping net.ErrClosed.
func requireCloseUnblocksAccept(t *testing.T, l net.Listener) {
	t.Helper()
	accepted := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		accepted <- err
	}()
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, l.Close())
	select {
	case err := <-accepted:
		require.ErrorIs(t, err, net.ErrClosed)
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not unblock Accept")
	}
}

// loopbackOrSkip skips unless the vsock loopback transport is loaded:
// binding VMADDR_CID_LOCAL (1) succeeds only then. Binding sends nothing
// anywhere, unlike dialing CID 1, which without loopback goes to the
// hypervisor.
func loopbackOrSkip(t *testing.T) {
	t.Helper()
	l, err := vsock.ListenContextID(vsock.Local, 0, nil)
	if err != nil {
		var errno syscall.Errno
		errors.As(err, &errno)
		t.Skipf("vsock loopback transport (vsock_loopback) not available: bind to CID 1 (VMADDR_CID_LOCAL) failed with errno %d %s (%v)",
			int(errno), unix.ErrnoName(errno), err)
	}
	l.Close()
}

// TestConnectVsockOwnCID dials this machine's own CID over the real
// socket API. Without the loopback transport the virtio transport refuses
// a packet to its own CID at once with ENODEV (nothing reaches the
// hypervisor), which ConnectVsock treats as "no guest yet" and retries.
func TestConnectVsockOwnCID(t *testing.T) {
	listenOrSkip(t, 0)
	cid, err := vsock.ContextID()
	require.NoError(t, err)
	if cid <= vsock.Host {
		t.Skipf("this machine's CID is %d (no guest transport); dialing it would leave the machine", cid)
	}
	if l, err := vsock.ListenContextID(vsock.Local, 0, nil); err == nil {
		l.Close()
		t.Skip("loopback transport present; TestVsockLoopback covers real dials")
	}
	_, err = ConnectVsock(testCtx(t, 300*time.Millisecond), cid, 4099)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, syscall.ENODEV)
	require.ErrorContains(t, err, "no such device (no guest has CID")
	t.Log(err)
}

func TestVsockLoopback(t *testing.T) {
	loopbackOrSkip(t)
	cid, err := vsock.ContextID()
	require.NoError(t, err)
	probe := listenOrSkip(t, 0)
	port := probe.Addr().(*vsock.Addr).Port
	probe.Close()

	ctx := testCtx(t, 10*time.Second)
	type result struct {
		d   Dialer
		err error
	}
	done := make(chan result, 1)
	go func() {
		d, err := ConnectVsock(ctx, cid, port)
		done <- result{d, err}
	}()
	time.Sleep(200 * time.Millisecond) // the agent listens late
	l := listenOrSkip(t, port)
	serveEcho(l)
	r := <-done
	require.NoError(t, r.err)
	defer r.d.Close()
	for _, msg := range []string{"first, over the kept connection", "second, a new connection"} {
		c, err := r.d.Dial(ctx)
		require.NoError(t, err)
		_, err = io.WriteString(c, msg)
		require.NoError(t, err)
		require.NoError(t, c.(interface{ CloseWrite() error }).CloseWrite())
		got, err := io.ReadAll(c)
		require.NoError(t, err)
		require.Equal(t, msg, string(got))
		c.Close()
	}
}
