package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/hashicorp/yamux"
)

// connectRetryInterval is how long the host waits between attempts to
// connect to QEMU's socket.
const connectRetryInterval = 20 * time.Millisecond

// ConnectVirtioSerial connects the host to the agent through QEMU's
// virtio-serial chardev socket at socketPath (QEMU runs it with
// -chardev socket,path=socketPath,server=on,wait=off). It:
//
//  1. connects to socketPath, retrying every 20 ms while the socket does
//     not exist yet or refuses connections (QEMU is starting);
//  2. reads until a full "COFFER-AGENT-HELLO 1" line and answers
//     "COFFER-HOST-ACK 1";
//  3. discards input until "COFFER-AGENT-SYNC 1";
//  4. starts a yamux client on the connection.
//
// It returns once the session is up; ctx bounds only the connection and
// handshake. When ctx ends first the error names the step that did not
// finish ("connect <path>: ...", "waiting for agent hello on <path>: guest
// never answered (...)", "waiting for agent sync on <path>: ...") and wraps
// ctx.Err(). A HELLO or SYNC of another protocol version fails at once with
// an error giving both versions, wrapping errdefs.ErrFailedPrecondition.
// Other errors (QEMU closed the socket, a path that is not a socket) are
// returned as soon as they happen.
func ConnectVirtioSerial(ctx context.Context, socketPath string) (Dialer, error) {
	conn, err := dialUnix(ctx, socketPath)
	if err != nil {
		return nil, err
	}
	port, err := hostHandshake(ctx, conn, socketPath)
	if err != nil {
		conn.Close()
		return nil, err
	}
	logger := log.G(ctx).WithField("transport", KindVirtioSerial).WithField("socket", socketPath)
	sess, err := yamux.Client(port, yamuxConfig(logger))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("start yamux client on %s: %w", socketPath, err)
	}
	return &virtioSerialDialer{sess: sess, path: socketPath}, nil
}

// dialUnix connects to QEMU's chardev socket, retrying while it does not
// exist yet or refuses connections.
func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	once := func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "unix", path) }
	c, g, err := retryDial(ctx, connectRetryInterval, once, isSocketNotReady)
	switch {
	case err != nil:
		return nil, fmt.Errorf("connect %s: %w", path, err)
	case g == nil:
		return c, nil
	case g.last == nil:
		return nil, fmt.Errorf("connect %s: %w", path, ctx.Err())
	}
	return nil, fmt.Errorf("connect %s: %s (%s; gave up after %d attempts in %s): %w",
		path, errnoText(g.last), qemuNotReadyHint(g.last, path), g.attempts, g.took, ctx.Err())
}

// isSocketNotReady reports whether a unix socket connect error means the
// VMM (QEMU's chardev, Cloud Hypervisor's vsock muxer) has not created or
// is not yet listening on its socket.
func isSocketNotReady(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EAGAIN)
}

func qemuNotReadyHint(err error, path string) string {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return "QEMU never created the socket; is it running with -chardev socket,path=" + path + ",server=on?"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nobody accepts on the socket; QEMU exited or has not started listening"
	default:
		return "QEMU's listen backlog stayed full"
	}
}

// errnoText returns the errno's text when err wraps one, else err's text.
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// hostHandshake runs the host side of the handshake on conn and returns
// the port for yamux, with the handshake's read buffer in front.
func hostHandshake(ctx context.Context, conn net.Conn, path string) (io.ReadWriteCloser, error) {
	// Unblock reads and writes when ctx ends; the error is rewritten
	// below to say which step was waiting.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	h := &hostShake{conn: conn, path: path, lr: newLineReader(bufio.NewReaderSize(conn, 4096)), start: time.Now()}
	err := h.run()
	if !stop() && err == nil {
		err = h.ctxError(ctx.Err())
	}
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) {
			return nil, h.ctxError(ctx.Err())
		}
		return nil, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("clear deadline on %s: %w", path, err)
	}
	return bufferedPort{Reader: h.lr.br, Writer: conn, Closer: conn}, nil
}

// hostShake is the state of one host handshake, kept for error messages.
type hostShake struct {
	conn  net.Conn
	path  string
	lr    *lineReader
	start time.Time
	step  string // "hello", "ack" or "sync": what the host waits for
	// ackAt is lr.total when the host sent its ACK.
	ackAt int64
}

func (h *hostShake) run() error {
	h.step = "kick"
	if _, err := h.conn.Write(handshakeLine(markHostHello)); err != nil {
		return fmt.Errorf("sending host hello on %s: %w", h.path, err)
	}
	h.step = "hello"
	if err := h.waitFor(markAgentHello); err != nil {
		return err
	}
	h.step = "ack"
	if _, err := h.conn.Write(handshakeLine(markHostAck)); err != nil {
		return fmt.Errorf("sending host ack on %s: %w", h.path, err)
	}
	h.ackAt = h.lr.total
	h.step = "sync"
	return h.waitFor(markAgentSync)
}

// waitFor reads lines until one ends with marker, which must carry our
// version.
func (h *hostShake) waitFor(marker string) error {
	what := "agent " + h.step
	for {
		line, err := h.lr.next()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("waiting for %s on %s: QEMU closed the connection (the VM exited, or QEMU serves one client at a time and another one was first): %w",
				what, h.path, err)
		}
		if err != nil {
			return fmt.Errorf("waiting for %s on %s: %w", what, h.path, err)
		}
		v, ok := versionAfter(line, marker)
		if !ok {
			continue
		}
		if !isOurVersion(v) {
			return fmt.Errorf("waiting for %s on %s: agent speaks transport protocol version %q, this host speaks version %d; build the guest image and the shim from the same coffer release: %w",
				what, h.path, v, protocolVersion, errdefs.ErrFailedPrecondition)
		}
		return nil
	}
}

// ctxError says which step was still waiting when ctx ended.
func (h *hostShake) ctxError(ctxErr error) error {
	since := time.Since(h.start).Round(time.Millisecond)
	switch h.step {
	case "kick":
		return fmt.Errorf("sending host hello on %s: QEMU did not take the bytes for %s: %w", h.path, since, ctxErr)
	case "hello":
		return fmt.Errorf("waiting for agent hello on %s: guest never answered (connected to QEMU %s ago, read %d bytes without a hello; is cc-agent running, and does the VM have -device virtserialport,name=%s?): %w",
			h.path, since, h.lr.total, VirtioSerialPortName, ctxErr)
	case "ack":
		return fmt.Errorf("sending host ack on %s: the guest did not take the bytes: %w", h.path, ctxErr)
	default:
		return fmt.Errorf("waiting for agent sync on %s: the agent said hello but never confirmed the host's ack (read %d bytes after the ack; did the agent restart?): %w",
			h.path, h.lr.total-h.ackAt, ctxErr)
	}
}

// virtioSerialDialer opens yamux streams over one virtio-serial session.
type virtioSerialDialer struct {
	sess *yamux.Session
	path string
}

func (d *virtioSerialDialer) Dial(ctx context.Context) (net.Conn, error) {
	type result struct {
		s   *yamux.Stream
		err error
	}
	// OpenStream blocks while 256 opens await the agent's ACK; do not
	// outlive ctx, and close a stream that opens too late.
	ch := make(chan result, 1)
	go func() {
		s, err := d.sess.OpenStream()
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("open stream to agent on %s: %w (QEMU or the agent went away; connect again): %w",
				d.path, r.err, errdefs.ErrUnavailable)
		}
		return stream{r.s}, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, fmt.Errorf("open stream to agent on %s: %w", d.path, ctx.Err())
	}
}

func (d *virtioSerialDialer) Close() error {
	return d.sess.Close()
}
