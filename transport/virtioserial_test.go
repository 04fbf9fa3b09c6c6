package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/log/logtest"
	"github.com/hashicorp/yamux"
	"github.com/stretchr/testify/require"
)

// testCtx returns a context with the test's logger, ending after d.
func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(logtest.WithT(context.Background(), t), d)
	t.Cleanup(cancel)
	return ctx
}

// startGuest runs the guest side on f and closes it when the test ends.
func startGuest(t *testing.T, f *fakeChardev) *virtioSerialListener {
	t.Helper()
	l, err := listenVirtioSerial(log.G(logtest.WithT(context.Background(), t)), virtioSerialAddr{name: VirtioSerialPortName, dev: "fake"}, f.open)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

// serveEcho echoes every accepted connection back and half-closes it,
// until l closes.
func serveEcho(l net.Listener) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				if cw, ok := c.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
			}()
		}
	}()
}

// connectHost connects the host side and closes it when the test ends.
func connectHost(t *testing.T, ctx context.Context, path string) Dialer {
	t.Helper()
	d, err := ConnectVirtioSerial(ctx, path)
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

// echoRoundTrip sends msg on a new connection, half-closes it and checks
// that the echo comes back complete.
func echoRoundTrip(t *testing.T, ctx context.Context, d Dialer, msg string) {
	t.Helper()
	echoRoundTripWith(t, ctx, d.Dial, msg)
}

// echoRoundTripWith is echoRoundTrip over a connection from dial.
func echoRoundTripWith(t *testing.T, ctx context.Context, dial func(context.Context) (net.Conn, error), msg string) {
	t.Helper()
	c, err := dial(ctx)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, msg)
	require.NoError(t, err)
	require.NoError(t, c.(interface{ CloseWrite() error }).CloseWrite())
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, msg, string(got))
}

func TestVirtioSerialGuestStartsFirst(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	path := socketPath(t)
	f := newFakeChardev(t, path)
	serveEcho(startGuest(t, f))
	// The guest polls a port without a host (reads return EOF, its HELLO
	// write blocks) for a while before the host comes.
	time.Sleep(300 * time.Millisecond)
	d := connectHost(t, ctx, path)
	echoRoundTrip(t, ctx, d, "guest first")
}

func TestVirtioSerialHostStartsFirst(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	path := socketPath(t)
	type result struct {
		d   Dialer
		err error
	}
	done := make(chan result, 1)
	go func() {
		d, err := ConnectVirtioSerial(ctx, path)
		done <- result{d, err}
	}()
	time.Sleep(200 * time.Millisecond) // host retries: no socket yet
	f := newFakeChardev(t, path)
	time.Sleep(200 * time.Millisecond) // host connected, waits for HELLO
	serveEcho(startGuest(t, f))
	r := <-done
	require.NoError(t, r.err)
	t.Cleanup(func() { r.d.Close() })
	echoRoundTrip(t, ctx, r.d, "host first")
}

// TestVirtioSerialStrayLinesFromGuest drives the host with a scripted
// guest that sends HELLOs and junk after the ACK: yamux must start exactly
// after SYNC.
func TestVirtioSerialStrayLinesFromGuest(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	path := socketPath(t)
	f := newFakeChardev(t, path)
	guestErr := make(chan error, 1)
	go func() { guestErr <- scriptedGuest(t, f) }()
	d := connectHost(t, ctx, path)
	echoRoundTrip(t, ctx, d, "after stray hellos")
	require.NoError(t, <-guestErr)
}

func scriptedGuest(t *testing.T, f *fakeChardev) error {
	port, _ := f.open()
	hello := handshakeLine(markAgentHello)
	for range 3 {
		if _, err := port.Write(hello); err != nil {
			return err
		}
	}
	br := bufio.NewReader(port)
	lr := newLineReader(br)
	for {
		line, err := lr.next()
		if errors.Is(err, io.EOF) {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			return err
		}
		if _, ok := versionAfter(line, markHostAck); ok {
			break
		}
	}
	var late bytes.Buffer
	for range 5 {
		late.Write(hello)
	}
	late.WriteString("\x00\x01binary junk without newline ")
	late.Write(hello) // a HELLO glued to junk
	late.Write(handshakeLine(markAgentSync))
	if _, err := port.Write(late.Bytes()); err != nil {
		return err
	}
	sess, err := yamux.Server(bufferedPort{br, port, port}, yamuxConfig(log.G(logtest.WithT(context.Background(), t))))
	if err != nil {
		return err
	}
	t.Cleanup(func() { sess.Close() })
	serveEcho(sess)
	return nil
}

// TestVirtioSerialStrayLinesFromHost drives the guest with a scripted host
// that sends junk before the ACK and answers late, so the guest repeats
// its HELLO.
func TestVirtioSerialStrayLinesFromHost(t *testing.T) {
	path := socketPath(t)
	f := newFakeChardev(t, path)
	serveEcho(startGuest(t, f))

	conn, err := net.Dial("unix", path)
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = conn.Write([]byte("\x00\x00\x00\x02junk\nmore junk COFFER-HOST-HELLO 1\n\xff\xfe"))
	require.NoError(t, err)
	br := bufio.NewReader(conn)
	lr := newLineReader(br)
	line, err := lr.next()
	require.NoError(t, err)
	require.Equal(t, strings.TrimSuffix(string(handshakeLine(markAgentHello)), "\n"), line)
	time.Sleep(350 * time.Millisecond)
	_, err = conn.Write(handshakeLine(markHostAck))
	require.NoError(t, err)
	hellos := 1
	for {
		line, err := lr.next()
		require.NoError(t, err)
		if _, ok := versionAfter(line, markAgentSync); ok {
			break
		}
		_, ok := versionAfter(line, markAgentHello)
		require.True(t, ok, "unexpected line %q before SYNC", line)
		hellos++
	}
	require.GreaterOrEqual(t, hellos, 3, "the guest repeats HELLO every 100 ms until the ACK")
	sess, err := yamux.Client(bufferedPort{br, conn, conn}, yamuxConfig(log.G(logtest.WithT(context.Background(), t))))
	require.NoError(t, err)
	defer sess.Close()
	echoRoundTrip(t, context.Background(), &virtioSerialDialer{sess: sess, path: path}, "after stray host lines")
}

// TestVirtioSerialLargeConcurrentStreams sends 16 MiB each way on several
// streams at once. The guest writes half its reply while still reading,
// and the other half only after the host's half-close reached it as EOF.
func TestVirtioSerialLargeConcurrentStreams(t *testing.T) {
	const (
		streams = 6
		size    = 16 << 20
	)
	ctx := testCtx(t, 15*time.Second)
	path := socketPath(t)
	f := newFakeChardev(t, path)
	l := startGuest(t, f)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go guestBulk(c, size)
		}
	}()
	d := connectHost(t, ctx, path)

	start := time.Now()
	errs := make(chan error, streams)
	for i := range streams {
		go func() { errs <- hostBulk(ctx, d, uint32(i), size) }()
	}
	for range streams {
		require.NoError(t, <-errs)
	}
	t.Logf("%d streams x %d MiB each way in %s", streams, size>>20, time.Since(start))
}

// pattern returns a deterministic byte source for stream i and direction.
func pattern(i uint32, dir byte) io.Reader {
	var seed [32]byte
	binary.BigEndian.PutUint32(seed[:], i)
	seed[4] = dir
	return rand.NewChaCha8(seed)
}

// hostBulk sends the stream index and size bytes, half-closes, and checks
// that the reply is the guest's pattern followed by the SHA-256 of what
// the host sent.
func hostBulk(ctx context.Context, d Dialer, i uint32, size int64) error {
	c, err := d.Dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	sent := sha256.New()
	wrote := make(chan error, 1)
	go func() {
		var idx [4]byte
		binary.BigEndian.PutUint32(idx[:], i)
		w := io.MultiWriter(c, sent)
		if _, err := w.Write(idx[:]); err != nil {
			wrote <- err
			return
		}
		if _, err := io.CopyN(w, pattern(i, 'h'), size); err != nil {
			wrote <- err
			return
		}
		wrote <- c.(interface{ CloseWrite() error }).CloseWrite()
	}()
	want := sha256.New()
	if _, err := io.CopyN(want, pattern(i, 'g'), size); err != nil {
		return err
	}
	got := sha256.New()
	n, err := io.CopyN(got, c, size)
	if err != nil {
		return fmt.Errorf("stream %d: read reply after %d bytes: %w", i, n, err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		return fmt.Errorf("stream %d: reply differs from the guest's pattern", i)
	}
	if err := <-wrote; err != nil {
		return fmt.Errorf("stream %d: send: %w", i, err)
	}
	trailer, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("stream %d: read trailer: %w", i, err)
	}
	if !bytes.Equal(trailer, sent.Sum(nil)) {
		return fmt.Errorf("stream %d: guest received different bytes than the host sent (trailer %x, want %x)", i, trailer, sent.Sum(nil))
	}
	return nil
}

// guestBulk is the guest end of hostBulk.
func guestBulk(c net.Conn, size int64) {
	defer c.Close()
	recv := sha256.New()
	var idx [4]byte
	if _, err := io.ReadFull(io.TeeReader(c, recv), idx[:]); err != nil {
		return
	}
	i := binary.BigEndian.Uint32(idx[:])
	reply := pattern(i, 'g')
	firstHalf := make(chan error, 1)
	go func() {
		_, err := io.CopyN(c, reply, size/2)
		firstHalf <- err
	}()
	if _, err := io.Copy(recv, c); err != nil { // until the host's half-close
		return
	}
	if err := <-firstHalf; err != nil {
		return
	}
	if _, err := io.CopyN(c, reply, size-size/2); err != nil {
		return
	}
	c.Write(recv.Sum(nil))
	c.(interface{ CloseWrite() error }).CloseWrite()
}

func TestVirtioSerialHostReconnects(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	path := socketPath(t)
	f := newFakeChardev(t, path)
	serveEcho(startGuest(t, f))

	d1, err := ConnectVirtioSerial(ctx, path)
	require.NoError(t, err)
	echoRoundTrip(t, ctx, d1, "first host")
	require.NoError(t, d1.Close())
	_, err = d1.Dial(ctx)
	require.True(t, errdefs.IsUnavailable(err), "dialing a closed session: %v", err)
	require.ErrorContains(t, err, "open stream to agent on "+path+": session shutdown (QEMU or the agent went away; connect again)")

	d2 := connectHost(t, ctx, path)
	echoRoundTrip(t, ctx, d2, "second host")
	require.GreaterOrEqual(t, f.opens.Load(), int32(2), "the guest re-opens its port after the session ends")
}

// TestVirtioSerialStaleSessionKick hides the first host's hangup from the
// guest. The second host's HELLO kick breaks the guest's stale yamux
// session, so the second host gets through well before any keepalive
// could notice.
func TestVirtioSerialStaleSessionKick(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	path := socketPath(t)
	f := newFakeChardev(t, path)
	f.hideHangup = true
	serveEcho(startGuest(t, f))

	d1, err := ConnectVirtioSerial(ctx, path)
	require.NoError(t, err)
	echoRoundTrip(t, ctx, d1, "first host")
	require.NoError(t, d1.Close())

	kickCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	d2 := connectHost(t, kickCtx, path)
	echoRoundTrip(t, ctx, d2, "second host")
}

func TestConnectVirtioSerialErrors(t *testing.T) {
	hostWith := func(t *testing.T, guest func(*fakeChardev)) (string, error) {
		path := socketPath(t)
		f := newFakeChardev(t, path)
		if guest != nil {
			go guest(f)
		}
		d, err := ConnectVirtioSerial(testCtx(t, 300*time.Millisecond), path)
		if d != nil {
			d.Close()
		}
		return path, err
	}
	// guestSays is a guest that writes s once and then stays silent.
	guestSays := func(s string) func(*fakeChardev) {
		return func(f *fakeChardev) {
			port, _ := f.open()
			port.Write([]byte(s))
		}
	}

	t.Run("no socket", func(t *testing.T) {
		path := socketPath(t)
		_, err := ConnectVirtioSerial(testCtx(t, 300*time.Millisecond), path)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, "connect "+path+": no such file or directory (QEMU never created the socket")
	})
	t.Run("no guest", func(t *testing.T) {
		path, err := hostWith(t, nil)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, "waiting for agent hello on "+path+": guest never answered (")
	})
	t.Run("no sync", func(t *testing.T) {
		path, err := hostWith(t, guestSays("COFFER-AGENT-HELLO 1\n"))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorContains(t, err, "waiting for agent sync on "+path+": the agent said hello but never confirmed")
	})
	t.Run("hello version", func(t *testing.T) {
		start := time.Now()
		_, err := hostWith(t, guestSays("COFFER-AGENT-HELLO 2\n"))
		require.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
		require.ErrorContains(t, err, `agent speaks transport protocol version "2", this host speaks version 1`)
		require.Less(t, time.Since(start), 250*time.Millisecond, "a version mismatch fails at once")
	})
	t.Run("sync version", func(t *testing.T) {
		_, err := hostWith(t, guestSays("COFFER-AGENT-HELLO 1\nCOFFER-AGENT-SYNC 9\n"))
		require.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
		require.ErrorContains(t, err, `waiting for agent sync`)
		require.ErrorContains(t, err, `version "9", this host speaks version 1`)
	})
}

func TestGuestHandshakeAckVersion(t *testing.T) {
	guest, host := net.Pipe()
	defer host.Close()
	go func() {
		br := bufio.NewReader(host)
		br.ReadString('\n') // HELLO
		host.Write([]byte("COFFER-HOST-ACK 7\n"))
		io.Copy(io.Discard, br)
	}()
	_, err := guestHandshake(guest, make(chan struct{}))
	require.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
	require.ErrorContains(t, err, `host speaks transport protocol version "7", this agent speaks version 1`)
}

func TestVirtioSerialListenerClose(t *testing.T) {
	t.Run("waiting for a host", func(t *testing.T) {
		f := newFakeChardev(t, socketPath(t))
		l := startGuest(t, f)
		time.Sleep(150 * time.Millisecond)
		closeAndCheck(t, l)
	})
	t.Run("during a session", func(t *testing.T) {
		ctx := testCtx(t, 10*time.Second)
		path := socketPath(t)
		f := newFakeChardev(t, path)
		l := startGuest(t, f)
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := l.Accept()
			if err == nil {
				accepted <- c
			}
		}()
		d := connectHost(t, ctx, path)
		hc, err := d.Dial(ctx)
		require.NoError(t, err)
		_, err = hc.Write([]byte("x")) // the guest learns of a stream on its first frame
		require.NoError(t, err)
		gc := <-accepted
		_, err = io.ReadFull(gc, make([]byte, 1))
		require.NoError(t, err)
		closeAndCheck(t, l)
		_, err = gc.Read(make([]byte, 1))
		require.Error(t, err, "streams end with the listener")
		// Like QEMU, the fake chardev keeps the host's socket open when
		// the guest closes its port, so the host would only learn of it
		// from a keepalive (up to 45 s); not waited for here.
	})
}

func closeAndCheck(t *testing.T, l *virtioSerialListener) {
	t.Helper()
	closed := make(chan struct{})
	go func() { l.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not return within 2 s")
	}
	_, err := l.Accept()
	require.ErrorIs(t, err, net.ErrClosed)
	select {
	case <-l.done:
	default:
		t.Fatal("background loop still running after Close")
	}
}

// TestVirtioSerialBufferedBytesReachYamux checks that bytes the host's
// handshake reader buffered past SYNC are handed to yamux: a scripted
// guest sends SYNC and a yamux ping in one write and waits for the answer.
func TestVirtioSerialBufferedBytesReachYamux(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	path := socketPath(t)
	f := newFakeChardev(t, path)
	answer := make(chan []byte, 1)
	go func() {
		defer close(answer)
		port, _ := f.open()
		defer port.Close()
		port.Write(handshakeLine(markAgentHello))
		br := bufio.NewReader(port)
		lr := newLineReader(br)
		for {
			line, err := lr.next()
			if errors.Is(err, io.EOF) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if err != nil {
				return
			}
			if _, ok := versionAfter(line, markHostAck); ok {
				break
			}
		}
		// yamux header: version 0, type 2 (ping), flags 1 (SYN),
		// stream 0, length = ping id 7.
		ping := []byte{0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7}
		port.Write(append(handshakeLine(markAgentSync), ping...))
		hdr := make([]byte, 12)
		if _, err := io.ReadFull(br, hdr); err == nil {
			answer <- hdr
		}
	}()
	connectHost(t, ctx, path)
	select {
	case hdr := <-answer:
		// type 2 (ping), flags 2 (ACK), ping id 7
		require.Equal(t, []byte{0, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7}, hdr)
	case <-ctx.Done():
		t.Fatal("the host's yamux never answered the ping sent right after SYNC")
	}
}
