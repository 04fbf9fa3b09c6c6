package cloudhypervisor

import (
	"context"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/vmm/vmproc/vmproctest"
)

// fdListener hands out fdConns, so that a fake API server sees the file
// descriptors a client sends with SCM_RIGHTS, as Cloud Hypervisor's
// micro_http server does.
type fdListener struct{ *net.UnixListener }

// Accept returns the next connection as an *fdConn.
func (l fdListener) Accept() (net.Conn, error) {
	c, err := l.AcceptUnix()
	if err != nil {
		return nil, err
	}
	return &fdConn{UnixConn: c}, nil
}

// fdConn is a unix connection whose reads also collect the file
// descriptors that arrive as SCM_RIGHTS ancillary data.
type fdConn struct {
	*net.UnixConn
	mu    sync.Mutex
	files []*os.File
}

// Read reads like net.UnixConn.Read and keeps any received descriptors.
func (c *fdConn) Read(p []byte) (int, error) {
	oob := make([]byte, unix.CmsgSpace(16*4))
	n, oobn, _, _, err := c.ReadMsgUnix(p, oob)
	if oobn > 0 {
		msgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
		if perr == nil {
			for i := range msgs {
				fds, ferr := unix.ParseUnixRights(&msgs[i])
				if ferr != nil {
					continue
				}
				c.mu.Lock()
				for _, fd := range fds {
					c.files = append(c.files, os.NewFile(uintptr(fd), "received"))
				}
				c.mu.Unlock()
			}
		}
	}
	return n, err
}

// takeFiles returns the descriptors received so far and forgets them.
func (c *fdConn) takeFiles() []*os.File {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.files
	c.files = nil
	return f
}

// connKey is the request context key of the request's connection.
type connKey struct{}

// withConnContext makes srv put each connection into its requests'
// contexts (receivedFiles reads it).
func withConnContext(srv *http.Server) *http.Server {
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}
	return srv
}

// receivedFiles returns the descriptors that came with r (SCM_RIGHTS),
// when the server runs on an fdListener with withConnContext.
func receivedFiles(r *http.Request) []*os.File {
	c, ok := r.Context().Value(connKey{}).(*fdConn)
	if !ok {
		return nil
	}
	return c.takeFiles()
}

// tapFacts is what a fake Cloud Hypervisor learns about a descriptor it
// was given: the tap's name and flags (TUNGETIFF) and the inode of the
// network namespace the tap lives in (TUNGETDEVNETNS).
type tapFacts struct {
	Name  string `json:"name"`
	Flags uint16 `json:"flags"`
	NetNS uint64 `json:"netns"`
	Err   string `json:"err,omitempty"`
}

// describeTap reads tapFacts from f; Err says what failed for a
// descriptor that is no tap.
func describeTap(f *os.File) tapFacts {
	rc, err := f.SyscallConn()
	if err != nil {
		return tapFacts{Err: err.Error()}
	}
	var tf tapFacts
	cerr := rc.Control(func(fd uintptr) {
		ifr, err := unix.NewIfreq("")
		if err != nil {
			tf.Err = err.Error()
			return
		}
		if err := unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr); err != nil {
			tf.Err = "TUNGETIFF: " + err.Error()
			return
		}
		tf.Name, tf.Flags = ifr.Name(), ifr.Uint16()
		nsfd, err := unix.IoctlRetInt(int(fd), unix.TUNGETDEVNETNS)
		if err != nil {
			tf.Err = "TUNGETDEVNETNS: " + err.Error()
			return
		}
		defer unix.Close(nsfd)
		tf.NetNS, err = inodeOf(nsfd)
		if err != nil {
			tf.Err = err.Error()
		}
	})
	if cerr != nil {
		tf.Err = cerr.Error()
	}
	return tf
}

// inodeOf returns the inode number of the open file fd.
func inodeOf(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// ownNetNS returns the inode of the calling thread's network namespace.
// Not /proc/self: that is the main thread's, and a test may have left the
// main thread in another namespace (newTapInNetns can run on it).
func ownNetNS() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// newTapInNetns creates a fresh network namespace and, inside it, a tap
// named name opened the way vmm/tapnet opens a pod's tap (IFF_TAP |
// IFF_NO_PI | IFF_VNET_HDR, non-blocking). It returns the tap's queue, a
// path that opens the namespace and the namespace's inode. Needs root;
// skips otherwise. Cleanup closes both, which removes the tap and the
// namespace.
func newTapInNetns(t *testing.T, name string) (tap *os.File, nsPath string, nsIno uint64) {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("this machine has no tun driver: %v", err)
	}
	ns, nsPath, nsIno := vmproctest.NewNetNS(t)
	err := vmproctest.InNetNS(ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err == nil {
			ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
			err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
		}
		if err == nil {
			err = unix.SetNonblock(fd, true)
		}
		if err != nil {
			unix.Close(fd)
			return err
		}
		tap = os.NewFile(uintptr(fd), "/dev/net/tun")
		return nil
	})
	require.NoError(t, err, "create a tap in a new network namespace")
	t.Cleanup(func() { tap.Close() })
	return tap, nsPath, nsIno
}
