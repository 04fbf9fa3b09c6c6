package forward

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// echoEndpoint is a TCP server on the loopback that answers each
// connection with "echo:" and what it read, then closes.
func echoEndpoint(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				io.WriteString(c, "echo:"+string(b))
			}()
		}
	}()
	return l.Addr().String()
}

// closedEndpoint returns a loopback address nothing listens on.
func closedEndpoint(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	return addr
}

// serveOnUnix runs srv on a unix socket standing in for the agent
// transport and returns a guest Dialer whose Open connects to it.
func serveOnUnix(t *testing.T, srv *Server) *Dialer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fwd.sock")
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return &Dialer{Open: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestForwardSplicesToTheConfiguredEndpoint(t *testing.T) {
	echo := echoEndpoint(t)
	d := serveOnUnix(t, &Server{Endpoints: []string{closedEndpoint(t), echo}})
	ctx := testCtx(t)
	for i := 0; i < 3; i++ { // several connections, one after another
		c, err := d.DialContext(ctx, "tcp", Address(1))
		require.NoError(t, err)
		_, err = io.WriteString(c, "hello")
		require.NoError(t, err)
		require.NoError(t, c.(*net.UnixConn).CloseWrite())
		got, err := io.ReadAll(c)
		require.NoError(t, err)
		require.Equal(t, "echo:hello", string(got))
		c.Close()
	}
}

func TestForwardUnknownIndexIsRefused(t *testing.T) {
	d := serveOnUnix(t, &Server{Endpoints: []string{echoEndpoint(t)}})
	_, err := d.DialContext(testCtx(t), "tcp", Address(3))
	require.ErrorIs(t, err, ErrRefused)
	require.EqualError(t, err, "dial agent-forward/3: the host refused the forward: forward 3 is not configured: the shim has 1 network.forwards entries (indexes 0-0): unknown forward")
}

func TestForwardDialFailure(t *testing.T) {
	closed := closedEndpoint(t)
	d := serveOnUnix(t, &Server{Endpoints: []string{closed}})
	_, err := d.DialContext(testCtx(t), "tcp", Address(0))
	require.ErrorIs(t, err, ErrDialFailed)
	require.ErrorContains(t, err, "host dial "+closed+" (network.forwards[0]): ")
	require.ErrorContains(t, err, "connection refused")
}

func TestServerRefusesABadHeader(t *testing.T) {
	d := serveOnUnix(t, &Server{Endpoints: []string{echoEndpoint(t)}})
	c, err := d.Open(testCtx(t))
	require.NoError(t, err)
	defer c.Close()
	// An agent channel byte where the forward header belongs.
	_, err = c.Write([]byte{'R', 1, 0, 2, 0, 0})
	require.NoError(t, err)
	err = ReadReply(c)
	require.ErrorIs(t, err, ErrRefused)
	require.ErrorContains(t, err, "first byte is 0x52")
	// The host closes a refused connection (a reset, as it left the rest
	// of the bad header unread).
	n, err := c.Read(make([]byte, 1))
	require.Zero(t, n)
	require.Error(t, err)
}

func TestServerDialsOnlyItsEndpoints(t *testing.T) {
	var dialed []string
	srv := &Server{
		Endpoints: []string{"192.0.2.1:5000"},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed = append(dialed, network+" "+addr)
			return nil, &net.OpError{Op: "dial", Net: network, Err: io.ErrClosedPipe}
		},
	}
	d := serveOnUnix(t, srv)
	ctx := testCtx(t)
	_, err := d.DialContext(ctx, "tcp", Address(0))
	require.ErrorIs(t, err, ErrDialFailed)
	_, err = d.DialContext(ctx, "tcp", Address(1))
	require.ErrorIs(t, err, ErrRefused)
	require.Equal(t, []string{"tcp 192.0.2.1:5000"}, dialed)
}

func TestDialerPlainAddressUsesTCP(t *testing.T) {
	echo := echoEndpoint(t)
	d := &Dialer{Open: func(context.Context) (net.Conn, error) {
		t.Fatal("a plain address must not use the agent transport")
		return nil, nil
	}}
	c, err := d.DialContext(testCtx(t), "tcp", echo)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, "echo:", string(got))
}

func TestDialerErrors(t *testing.T) {
	ctx := testCtx(t)
	_, err := (&Dialer{}).DialContext(ctx, "tcp", Address(0))
	require.ErrorIs(t, err, ErrUnknownForward)
	require.ErrorContains(t, err, "this guest's agent transport carries no forwards")

	_, err = (&Dialer{}).DialContext(ctx, "tcp", "agent-forward/x")
	require.ErrorIs(t, err, ErrUnknownForward)

	_, err = (&Dialer{}).DialContext(ctx, "udp", Address(0))
	require.EqualError(t, err, `dial agent-forward/0: forwards carry TCP only, not "udp"`)

	d := &Dialer{Open: func(context.Context) (net.Conn, error) { return nil, io.ErrClosedPipe }}
	_, err = d.DialContext(ctx, "tcp", Address(0))
	require.ErrorIs(t, err, io.ErrClosedPipe)
	require.ErrorContains(t, err, "open a connection to the host on the agent transport")

	// A host that closes without a reply: a shim that serves no forwards.
	d = &Dialer{Open: func(context.Context) (net.Conn, error) {
		g, h := net.Pipe()
		go func() {
			ReadHeader(h)
			h.Close()
		}()
		return g, nil
	}}
	_, err = d.DialContext(ctx, "tcp", Address(0))
	require.ErrorIs(t, err, io.EOF)
	require.ErrorContains(t, err, "read forward reply")
}

func TestDialerHonoursContext(t *testing.T) {
	hosts := make(chan net.Conn, 1)
	d := &Dialer{Open: func(context.Context) (net.Conn, error) {
		g, h := net.Pipe()
		go func() { ReadHeader(h); hosts <- h }() // never replies
		return g, nil
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := d.DialContext(ctx, "tcp", Address(0))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 5*time.Second)
	require.True(t, strings.HasPrefix(err.Error(), "dial agent-forward/0: context deadline exceeded"), err.Error())
	(<-hosts).Close()
}
