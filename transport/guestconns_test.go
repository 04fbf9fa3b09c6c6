package transport

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/mdlayher/vsock"
	"github.com/stretchr/testify/require"
)

// TestVirtioSerialGuestOpensStreams: streams the guest opens with
// OpenHost arrive at the host's GuestListener, alongside the host's own
// streams, and carry data both ways with half-close.
func TestVirtioSerialGuestOpensStreams(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	path := socketPath(t)
	f := newFakeChardev(t, path)
	g := startGuest(t, f)
	serveEcho(g)
	d := connectHost(t, ctx, path)

	gl := d.(GuestAcceptor).GuestListener()
	defer gl.Close()
	serveEcho(gl)

	for _, msg := range []string{"first from the guest", "second from the guest"} {
		echoRoundTripWith(t, ctx, g.OpenHost, msg)
	}
	// The host's own streams still reach the agent.
	echoRoundTrip(t, ctx, d, "from the host")
}

func TestVirtioSerialOpenHostWithoutHost(t *testing.T) {
	f := newFakeChardev(t, socketPath(t))
	g := startGuest(t, f)
	_, err := g.OpenHost(testCtx(t, time.Second))
	require.ErrorIs(t, err, errdefs.ErrUnavailable)
	require.ErrorContains(t, err, "no host is connected")

	g.Close()
	_, err = g.OpenHost(testCtx(t, time.Second))
	require.ErrorIs(t, err, net.ErrClosed)
}

func TestGuestListenerClose(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	path := socketPath(t)
	startGuest(t, newFakeChardev(t, path))
	d := connectHost(t, ctx, path)
	requireCloseUnblocksAccept(t, d.(GuestAcceptor).GuestListener())
}

// TestListenHybridVsock plays Cloud Hypervisor: for a guest connection to
// the host's vsock port P it connects to "<socket>_P" and relays bytes.
func TestListenHybridVsock(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vsock.sock")
	stale := sock + "_1234"
	require.NoError(t, os.WriteFile(stale, nil, 0o600))

	l, err := ListenHybridVsock(sock, 1234)
	require.NoError(t, err, "a stale file at the path is replaced")
	defer l.Close()
	require.Equal(t, stale, l.Addr().String())
	serveEcho(l)

	c, err := net.Dial("unix", stale)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "from the guest, relayed by the VMM")
	require.NoError(t, err)
	require.NoError(t, c.(*net.UnixConn).CloseWrite())
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, "from the guest, relayed by the VMM", string(got))

	_, err = ListenHybridVsock(filepath.Join(t.TempDir(), "missing", "vsock.sock"), 1)
	require.ErrorContains(t, err, "listen for guest vsock port 1 on ")
}

// fakeVsockListener hands out connections whose remote address is a
// vsock address of the given CIDs.
type fakeVsockListener struct {
	conns chan net.Conn
}

func (l *fakeVsockListener) Accept() (net.Conn, error) {
	c, ok := <-l.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l *fakeVsockListener) Close() error   { return nil }
func (l *fakeVsockListener) Addr() net.Addr { return &vsock.Addr{ContextID: vsock.Host, Port: 7} }

// vsockConn is one end of a pipe that says it comes from cid.
type vsockConn struct {
	net.Conn
	cid uint32
}

func (c vsockConn) RemoteAddr() net.Addr { return &vsock.Addr{ContextID: c.cid, Port: 5555} }

func TestListenVsockFromAcceptsOnlyTheGuest(t *testing.T) {
	fake := &fakeVsockListener{conns: make(chan net.Conn, 3)}
	l, err := listenVsockFrom(GuestVsockPort(42), 42, func(port uint32) (net.Listener, error) {
		require.Equal(t, uint32(42), port)
		return fake, nil
	})
	require.NoError(t, err)

	otherVM, otherPeer := net.Pipe()
	guest, _ := net.Pipe()
	fake.conns <- vsockConn{otherVM, 43}
	fake.conns <- vsockConn{guest, 42}
	close(fake.conns)

	c, err := l.Accept()
	require.NoError(t, err)
	require.Equal(t, uint32(42), c.RemoteAddr().(*vsock.Addr).ContextID)
	require.Equal(t, 1, l.(*cidListener).rejected)
	_, err = otherPeer.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "the other VM's connection was closed")

	_, err = l.Accept()
	require.ErrorIs(t, err, net.ErrClosed)

	_, err = listenVsockFrom(7, 42, func(uint32) (net.Listener, error) { return nil, os.NewSyscallError("bind", syscall.EADDRINUSE) })
	require.ErrorContains(t, err, "listen on host vsock port 7 for guest cid 42: address already in use (another process already listens on this port)")
}

// TestDialHostVsockWithoutListener dials the host over the real socket
// API where the kernel has AF_VSOCK; without a guest transport or a
// listener it fails with an error naming the port.
func TestDialHostVsockWithoutListener(t *testing.T) {
	if _, err := vsock.ContextID(); err != nil {
		t.Skipf("no AF_VSOCK on this machine: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := DialHostVsock(ctx)
	require.Error(t, err)
	cid, _ := vsock.ContextID()
	require.ErrorContains(t, err, fmt.Sprintf("dial the host over vsock: cid 2 port %d: ", GuestVsockPort(cid)))
}
