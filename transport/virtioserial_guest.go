package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/hashicorp/yamux"
	"github.com/sirupsen/logrus"
)

const (
	// sysVirtioPorts is where the virtio_console driver lists its ports.
	sysVirtioPorts = "/sys/class/virtio-ports"
	// portWaitTimeout bounds the wait for the port to appear when ctx
	// has no deadline.
	portWaitTimeout = 30 * time.Second
	// portPollInterval is how often the guest looks for the port.
	portPollInterval = 50 * time.Millisecond
	// reopenDelay is the pause before the guest re-opens its port after
	// a failed open or handshake, so a persistent fault does not spin.
	reopenDelay = time.Second
)

// ListenVirtioSerial is the guest side of the virtio-serial transport. It
// finds the port /dev/vportNpM whose /sys/class/virtio-ports/vportNpM/name
// is portName (VirtioSerialPortName for cc-agent), polling every 50 ms
// while the virtio_console module may still be loading, and opens it.
//
// ctx bounds that search (30 s when ctx has no deadline) and provides the
// logger (log.G(ctx)); it does not bound the listener's life. If the port
// never appears, the error lists the ports that exist and wraps
// errdefs.ErrNotFound and ctx.Err().
//
// In the background the listener then runs the handshake (see the package
// documentation: HELLO every 100 ms until ACK, then SYNC) and a yamux
// server; Accept returns its streams, which support CloseWrite. When the
// session dies (the host went away), the listener re-opens the port and
// waits for the next host; Accept keeps working across sessions. Close
// ends the session and the port and makes Accept return an error wrapping
// net.ErrClosed.
func ListenVirtioSerial(ctx context.Context, portName string) (net.Listener, error) {
	dev, err := findVirtioPort(ctx, sysVirtioPorts, "/dev", portName)
	if err != nil {
		return nil, err
	}
	open := func() (io.ReadWriteCloser, error) {
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("open virtio-serial port %q at %s: %w", portName, dev, err)
		}
		return f, nil
	}
	l, err := listenVirtioSerial(log.G(ctx), virtioSerialAddr{name: portName, dev: dev}, open)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// findVirtioPort polls sysDir for a port named name and returns its device
// path under devDir.
func findVirtioPort(ctx context.Context, sysDir, devDir, name string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, portWaitTimeout)
		defer cancel()
	}
	start := time.Now()
	for {
		ports, err := listVirtioPorts(sysDir)
		if err == nil {
			for dev, n := range ports {
				if n == name {
					return filepath.Join(devDir, dev), nil
				}
			}
		}
		select {
		case <-time.After(portPollInterval):
			continue
		case <-ctx.Done():
		}
		var present string
		switch {
		case errors.Is(err, os.ErrNotExist):
			present = sysDir + " does not exist: the virtio_console module is not loaded"
		case err != nil:
			present = "unknown: " + err.Error()
		case len(ports) == 0:
			present = "none"
		default:
			var s []string
			for dev, n := range ports {
				s = append(s, fmt.Sprintf("%s=%q", dev, n))
			}
			sort.Strings(s)
			present = strings.Join(s, ", ")
		}
		return "", fmt.Errorf("find virtio-serial port %q: no port with that name under %s after %s (ports present: %s); load virtio_console and give QEMU -device virtserialport,name=%s: %w: %w",
			name, sysDir, time.Since(start).Round(time.Millisecond), present, name, errdefs.ErrNotFound, ctx.Err())
	}
}

// listVirtioPorts maps each port's device name (vportNpM) to its port name.
// A port whose name file is empty has no name.
func listVirtioPorts(sysDir string) (map[string]string, error) {
	entries, err := os.ReadDir(sysDir)
	if err != nil {
		return nil, err
	}
	ports := make(map[string]string, len(entries))
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(sysDir, e.Name(), "name"))
		if err != nil {
			continue // the driver creates the name file after the directory
		}
		ports[e.Name()] = strings.TrimSpace(string(b))
	}
	return ports, nil
}

// virtioSerialAddr is the address of the guest's listener.
type virtioSerialAddr struct{ name, dev string }

func (a virtioSerialAddr) Network() string { return string(KindVirtioSerial) }
func (a virtioSerialAddr) String() string  { return a.name + "@" + a.dev }

// virtioSerialListener serves yamux streams from successive host sessions
// on one virtio-serial port.
type virtioSerialListener struct {
	addr virtioSerialAddr
	open func() (io.ReadWriteCloser, error)
	log  *logrus.Entry
	cfg  *yamux.Config

	conns  chan net.Conn
	closed chan struct{} // closed by Close
	done   chan struct{} // closed when run returns
	once   sync.Once

	mu   sync.Mutex
	port io.Closer      // the open port, nil between opens
	sess *yamux.Session // the current session, nil outside one
}

// listenVirtioSerial opens the port once, so that the first open's error
// reaches the caller, and serves sessions on it in the background. Tests
// pass an open that returns an in-memory port.
func listenVirtioSerial(logger *logrus.Entry, addr virtioSerialAddr, open func() (io.ReadWriteCloser, error)) (*virtioSerialListener, error) {
	port, err := open()
	if err != nil {
		return nil, err
	}
	logger = logger.WithField("transport", KindVirtioSerial).WithField("port", addr.String())
	l := &virtioSerialListener{
		addr:   addr,
		open:   open,
		log:    logger,
		cfg:    yamuxConfig(logger),
		conns:  make(chan net.Conn),
		closed: make(chan struct{}),
		done:   make(chan struct{}),
	}
	go l.run(port)
	return l, nil
}

// Accept returns the next stream the host opens, from whichever session is
// current. After Close it returns an error wrapping net.ErrClosed.
func (l *virtioSerialListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, fmt.Errorf("accept on virtio-serial port %s: %w", l.addr, net.ErrClosed)
	}
}

// Close ends the current session and closes the port; streams already
// accepted end with the session. It waits until the background loop has
// stopped and always returns nil. The host cannot see a port close (QEMU
// keeps its socket open): it learns of it when the VM exits and QEMU
// closes the socket, or at the latest from yamux's keepalive (15 s ping
// interval plus 30 s for the answer).
func (l *virtioSerialListener) Close() error {
	l.once.Do(func() {
		close(l.closed)
		l.mu.Lock()
		if l.sess != nil {
			l.sess.Close()
		}
		if l.port != nil {
			l.port.Close()
		}
		l.mu.Unlock()
		<-l.done
	})
	return nil
}

// Addr returns the port name and device path ("agent.0@/dev/vport1p1").
func (l *virtioSerialListener) Addr() net.Addr { return l.addr }

func (l *virtioSerialListener) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

// track records the open port and session for Close. It returns false, and
// closes them, when the listener is already closed.
func (l *virtioSerialListener) track(port io.Closer, sess *yamux.Session) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.isClosed() {
		if sess != nil {
			sess.Close()
		}
		if port != nil {
			port.Close()
		}
		return false
	}
	l.port, l.sess = port, sess
	return true
}

// pause waits d, or less when the listener closes; it reports whether the
// listener is still open.
func (l *virtioSerialListener) pause(d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-l.closed:
		return false
	}
}

// run serves one session after another until Close.
func (l *virtioSerialListener) run(port io.ReadWriteCloser) {
	defer close(l.done)
	for n := 1; ; n++ {
		if port == nil {
			p, err := l.open()
			if err != nil {
				l.log.WithError(err).Warn("cannot re-open virtio-serial port; retrying")
				if !l.pause(reopenDelay) {
					return
				}
				continue
			}
			port = p
		}
		if !l.track(port, nil) {
			return
		}
		l.log.WithField("session", n).Debug("waiting for the host")
		rw, err := guestHandshake(port, l.closed)
		if err != nil {
			port.Close()
			port = nil
			if l.isClosed() {
				return
			}
			l.log.WithError(err).Warn("virtio-serial handshake failed; re-opening the port")
			if !l.pause(reopenDelay) {
				return
			}
			continue
		}
		sess, err := yamux.Server(rw, l.cfg)
		if err != nil {
			// Only an invalid configuration fails here; it is a constant.
			l.log.WithError(err).Error("start yamux server")
			port.Close()
			return
		}
		if !l.track(port, sess) {
			return
		}
		l.log.WithField("session", n).Info("host connected over virtio-serial")
		l.serve(sess)
		sess.Close() // closes port
		port = nil
		if l.isClosed() {
			return
		}
		l.log.WithField("session", n).Info("host went away; re-opening the port for the next host")
	}
}

// serve hands the session's streams to Accept until the session ends.
func (l *virtioSerialListener) serve(sess *yamux.Session) {
	for {
		s, err := sess.AcceptStream()
		if err != nil {
			return
		}
		select {
		case l.conns <- stream{s}:
		case <-l.closed:
			s.Close()
			return
		}
	}
}

// guestHandshake runs the guest side of the handshake on port: HELLO every
// helloInterval until an ACK of our version arrives, then SYNC. It returns
// the port with the handshake's read buffer in front, for yamux. It fails
// when the port fails, when stop closes, or when the host's ACK carries
// another version. The caller closes port on error.
func guestHandshake(port io.ReadWriteCloser, stop <-chan struct{}) (io.ReadWriteCloser, error) {
	br := bufio.NewReaderSize(port, 4096)
	acked := make(chan struct{})
	wrote := make(chan error, 1)
	go func() { wrote <- sendHellos(port, acked, stop) }()
	err := waitForAck(newLineReader(br), stop)
	close(acked)
	if err != nil {
		port.Close() // unblocks a HELLO write waiting for the host
		<-wrote
		return nil, err
	}
	// No HELLO may follow the SYNC: wait until the writer has stopped.
	if err := <-wrote; err != nil {
		return nil, err
	}
	if _, err := port.Write(handshakeLine(markAgentSync)); err != nil {
		return nil, fmt.Errorf("send agent sync: %w", err)
	}
	return bufferedPort{Reader: br, Writer: port, Closer: port}, nil
}

// sendHellos writes HELLO every helloInterval until acked or stop closes.
// A write blocks while no host is connected (the virtio_console driver
// holds writers until the host side opens); that is fine, the reader keeps
// polling. On a write error it closes port so the reader stops too.
func sendHellos(port io.ReadWriteCloser, acked, stop <-chan struct{}) error {
	t := time.NewTicker(helloInterval)
	defer t.Stop()
	hello := handshakeLine(markAgentHello)
	for {
		if _, err := port.Write(hello); err != nil {
			port.Close()
			return fmt.Errorf("send agent hello: %w", err)
		}
		select {
		case <-acked:
			return nil
		case <-stop:
			return nil
		case <-t.C:
		}
	}
}

// errListenerClosed ends a handshake because the listener was closed.
var errListenerClosed = errors.New("listener closed")

// waitForAck reads lines until the host's ACK. io.EOF means no host is
// connected (the driver returns 0 bytes then); it polls every
// helloInterval until one is.
func waitForAck(lr *lineReader, stop <-chan struct{}) error {
	for {
		line, err := lr.next()
		if errors.Is(err, io.EOF) {
			select {
			case <-stop:
				return errListenerClosed
			case <-time.After(helloInterval):
				continue
			}
		}
		if err != nil {
			return fmt.Errorf("wait for host ack: %w", err)
		}
		v, ok := versionAfter(line, markHostAck)
		if !ok {
			continue // the host's kick, or stale bytes of an earlier session
		}
		if !isOurVersion(v) {
			return fmt.Errorf("wait for host ack: host speaks transport protocol version %q, this agent speaks version %d; build the guest image and the shim from the same coffer release: %w",
				v, protocolVersion, errdefs.ErrFailedPrecondition)
		}
		return nil
	}
}
