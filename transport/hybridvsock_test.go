package transport

import (
	"bufio"
	"context"
	"io"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

// hybridPeer is a unix-socket peer speaking Cloud Hypervisor's hybrid vsock
// protocol: it reads "CONNECT <port>\n" and answers per its script, one
// entry per connection (the last entry repeats):
//
//	"ok"       "OK 1073741824\n", then echoes every byte back
//	"refuse"   close without a reply (no guest listener)
//	"partial"  "OK 10" and close (the VMM dies mid-reply)
//	"garbage"  "HTTP/1.1 400 Bad Request\n" (not a vsock socket)
//	"silent"   never answer
type hybridPeer struct {
	path   string
	l      net.Listener
	mu     sync.Mutex
	script []string
	lines  []string // CONNECT lines received
	wg     sync.WaitGroup
}

func newHybridPeer(t *testing.T, script ...string) *hybridPeer {
	p := &hybridPeer{path: filepath.Join(t.TempDir(), "vsock.sock"), script: script}
	l, err := net.Listen("unix", p.path)
	require.NoError(t, err)
	p.l = l
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() { l.Close(); p.wg.Wait() })
	return p
}

func (p *hybridPeer) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		step := p.script[0]
		if len(p.script) > 1 {
			p.script = p.script[1:]
		}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c, step)
	}
}

func (p *hybridPeer) serve(c net.Conn, step string) {
	defer p.wg.Done()
	defer c.Close()
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return
	}
	p.mu.Lock()
	p.lines = append(p.lines, line)
	p.mu.Unlock()
	switch step {
	case "ok":
		io.WriteString(c, "OK 1073741824\n")
		io.Copy(c, br) // echo, starting with any byte already buffered
	case "partial":
		io.WriteString(c, "OK 10")
	case "garbage":
		io.WriteString(c, "HTTP/1.1 400 Bad Request\n")
	case "silent":
		io.Copy(io.Discard, br)
	}
}

func (p *hybridPeer) connectLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

func TestHybridVsockHandshake(t *testing.T) {
	p := newHybridPeer(t, "ok")
	d, err := ConnectHybridVsock(testCtx(t, 5*time.Second), p.path, 1024)
	require.NoError(t, err)
	defer d.Close()

	for i := 0; i < 2; i++ {
		c, err := d.Dial(testCtx(t, 5*time.Second))
		require.NoError(t, err)
		_, ok := c.(interface{ CloseWrite() error })
		require.True(t, ok, "hybrid vsock connections support CloseWrite")
		// The first byte after OK is the guest's: the handshake must
		// not have eaten it, and the peer echoes raw bytes.
		_, err = c.Write([]byte("R-hello"))
		require.NoError(t, err)
		buf := make([]byte, 7)
		_, err = io.ReadFull(c, buf)
		require.NoError(t, err)
		require.Equal(t, "R-hello", string(buf))
		c.Close()
	}
	require.Equal(t, []string{"CONNECT 1024\n", "CONNECT 1024\n"}, p.connectLines(),
		"the first Dial reuses ConnectHybridVsock's connection, the second makes a new one")

	require.NoError(t, d.Close())
	_, err = d.Dial(context.Background())
	require.ErrorIs(t, err, net.ErrClosed)
}

func TestHybridVsockRetriesRefusedConnect(t *testing.T) {
	p := newHybridPeer(t, "refuse", "refuse", "ok")
	d, err := connectHybridVsock(testCtx(t, 5*time.Second), p.path, 1024, dialHybridVsock, time.Millisecond)
	require.NoError(t, err)
	d.Close()
	require.Len(t, p.connectLines(), 3)
}

func TestHybridVsockRefusedUntilDeadline(t *testing.T) {
	p := newHybridPeer(t, "refuse")
	_, err := connectHybridVsock(testCtx(t, 200*time.Millisecond), p.path, 1024, dialHybridVsock, 10*time.Millisecond)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, ErrHybridConnectRefused)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.ErrorContains(t, err, "connect to vsock port 1024 through "+p.path+": ")
	require.ErrorContains(t, err, "nothing in the guest listens on port 1024 yet")
	require.Regexp(t, `after \d+ attempts in`, err.Error())
}

func TestHybridVsockRefusedDial(t *testing.T) {
	p := newHybridPeer(t, "ok", "refuse")
	d, err := ConnectHybridVsock(testCtx(t, 5*time.Second), p.path, 1024)
	require.NoError(t, err)
	defer d.Close()
	c, err := d.Dial(context.Background())
	require.NoError(t, err)
	c.Close()
	_, err = d.Dial(testCtx(t, 5*time.Second))
	require.ErrorIs(t, err, ErrHybridConnectRefused, "a later Dial does not retry")
}

func TestHybridVsockPeerClosesMidHandshake(t *testing.T) {
	p := newHybridPeer(t, "partial")
	start := time.Now()
	_, err := ConnectHybridVsock(testCtx(t, 5*time.Second), p.path, 1024)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.ErrorContains(t, err, `the VMM closed the connection mid-reply after "OK 10"`)
	require.Less(t, time.Since(start), time.Second, "no retry after a cut reply")
	require.Len(t, p.connectLines(), 1)
}

func TestHybridVsockWrongPeer(t *testing.T) {
	p := newHybridPeer(t, "garbage")
	_, err := ConnectHybridVsock(testCtx(t, 5*time.Second), p.path, 1024)
	require.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
	require.ErrorContains(t, err, `the VMM replied "HTTP/1.1 400 Bad Request", want "OK <port>"`)
}

func TestHybridVsockSilentPeerTimesOut(t *testing.T) {
	p := newHybridPeer(t, "silent")
	_, err := ConnectHybridVsock(testCtx(t, 200*time.Millisecond), p.path, 1024)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, `timed out in phase "wait for OK"`)
}

func TestHybridVsockWaitsForSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vsock.sock")
	_, err := connectHybridVsock(testCtx(t, 100*time.Millisecond), path, 1024, dialHybridVsock, 10*time.Millisecond)
	require.ErrorIs(t, err, syscall.ENOENT)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "the VMM has not created its vsock socket yet")

	// The socket appears while ConnectHybridVsock retries.
	done := make(chan error, 1)
	go func() {
		d, err := connectHybridVsock(testCtx(t, 5*time.Second), path, 1024, dialHybridVsock, 5*time.Millisecond)
		if err == nil {
			d.Close()
		}
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "OK 1073741825\n")
		io.Copy(io.Discard, c)
	}()
	require.NoError(t, <-done)
}
