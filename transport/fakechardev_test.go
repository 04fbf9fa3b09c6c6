package transport

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeChardev stands in for QEMU's "-chardev socket,server=on,wait=off"
// feeding a virtserialport, as the guest's virtio_console driver shows it:
//
//   - the host connects to a unix socket; one host is served at a time;
//   - while no host is connected, guest reads return io.EOF at once (the
//     driver returns 0 bytes) and guest writes block;
//   - bytes from the host wait until a guest port reads them.
//
// With hideHangup set, guest reads block instead of returning io.EOF when
// the host goes away: the guest cannot notice a departed host, as when a
// new host connects before the guest reads the hangup.
type fakeChardev struct {
	t          *testing.T
	path       string
	ln         net.Listener
	hideHangup bool
	opens      atomic.Int32

	mu      sync.Mutex
	host    *fakeHost
	changed chan struct{} // closed and replaced whenever host changes

	shutdown chan struct{}
	wg       sync.WaitGroup
}

type fakeHost struct {
	conn    net.Conn
	data    chan []byte   // host -> guest, one chunk at a time
	gone    chan struct{} // closed after the host hung up and its data was taken
	pending []byte        // rest of a chunk a short guest read left, under mu
}

// socketPath returns a path for a chardev socket that does not exist yet.
func socketPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "agent.sock")
}

// newFakeChardev listens on path and serves hosts until the test ends.
func newFakeChardev(t *testing.T, path string) *fakeChardev {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("listen on %s: %v", path, err)
	}
	f := &fakeChardev{t: t, path: path, ln: ln, changed: make(chan struct{}), shutdown: make(chan struct{})}
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(f.close)
	return f
}

func (f *fakeChardev) close() {
	close(f.shutdown)
	f.ln.Close()
	f.mu.Lock()
	if f.host != nil {
		f.host.conn.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

func (f *fakeChardev) setHost(h *fakeHost) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.host = h
	close(f.changed)
	f.changed = make(chan struct{})
}

// serve accepts one host at a time and pumps its bytes towards the guest.
func (f *fakeChardev) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		h := &fakeHost{conn: c, data: make(chan []byte), gone: make(chan struct{})}
		f.setHost(h)
		for {
			buf := make([]byte, 64<<10)
			n, err := c.Read(buf)
			if n > 0 {
				select {
				case h.data <- buf[:n]:
				case <-f.shutdown:
				}
			}
			if err != nil {
				break
			}
		}
		f.setHost(nil)
		close(h.gone)
		c.Close()
	}
}

// open is the guest's opener: a new port on the chardev.
func (f *fakeChardev) open() (io.ReadWriteCloser, error) {
	f.opens.Add(1)
	return &fakePort{f: f, closed: make(chan struct{})}, nil
}

// fakePort is one open of the guest's port.
type fakePort struct {
	f      *fakeChardev
	closed chan struct{}
	once   sync.Once
}

func (p *fakePort) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

func (p *fakePort) Read(b []byte) (int, error) {
	f := p.f
	for {
		f.mu.Lock()
		h, changed := f.host, f.changed
		if h != nil && len(h.pending) > 0 {
			n := copy(b, h.pending)
			h.pending = h.pending[n:]
			f.mu.Unlock()
			return n, nil
		}
		f.mu.Unlock()
		select {
		case <-p.closed:
			return 0, os.ErrClosed
		default:
		}
		if h == nil {
			if !f.hideHangup {
				return 0, io.EOF
			}
			select {
			case <-changed:
				continue
			case <-p.closed:
				return 0, os.ErrClosed
			}
		}
		select {
		case chunk := <-h.data:
			n := copy(b, chunk)
			if n < len(chunk) {
				f.mu.Lock()
				h.pending = chunk[n:]
				f.mu.Unlock()
			}
			return n, nil
		case <-h.gone:
			if !f.hideHangup {
				return 0, io.EOF
			}
		case <-p.closed:
			return 0, os.ErrClosed
		}
	}
}

func (p *fakePort) Write(b []byte) (int, error) {
	f := p.f
	total := 0
	for {
		f.mu.Lock()
		h, changed := f.host, f.changed
		f.mu.Unlock()
		if h == nil {
			select {
			case <-changed:
				continue
			case <-p.closed:
				return total, os.ErrClosed
			}
		}
		// Short deadlines so that Close can interrupt a write the host
		// does not read.
		h.conn.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := h.conn.Write(b[total:])
		total += n
		if err == nil {
			return total, nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return total, err
		}
		select {
		case <-p.closed:
			return total, os.ErrClosed
		default:
		}
	}
}
