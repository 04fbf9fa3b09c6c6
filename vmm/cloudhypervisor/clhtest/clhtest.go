// Package clhtest is a fake cloud-hypervisor for tests of package
// cloudhypervisor and of the shim: a test binary whose TestMain calls
// Main acts as cloud-hypervisor when ModeEnv is set. The fake serves the
// API on --api-socket, takes tap descriptors sent with vm.add-net over
// SCM_RIGHTS, and records what it got, and the network namespace it runs
// in, in <state dir>/fake-clh.json (Record). The pieces it is built from
// (FDListener, ReceivedFiles, DescribeTap) also serve in-process fakes.
package clhtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// ModeEnv makes a test binary act as the fake cloud-hypervisor (Main)
// with the named behaviour:
//
//	serve        serve the API; vmm.shutdown exits 0
//	exit         print an error to stderr and exit 1 at once
//	fail-boot    like serve, but vm.boot answers 500 with BootErrorBody
//	fail-add-net like serve, but vm.add-net answers 500 with AddNetErrorBody
//	deaf         like serve, but vmm.shutdown answers 204 and does not exit
const ModeEnv = "COFFER_TEST_FAKE_CLH"

// Main runs the fake cloud-hypervisor and exits when ModeEnv is set, and
// returns otherwise. Call it first in TestMain.
func Main() {
	if mode := os.Getenv(ModeEnv); mode != "" {
		os.Exit(Run(mode, os.Args[1:]))
	}
}

// BootErrorBody is the text Cloud Hypervisor's API server sends with a 500
// for a failed vm.boot (vmm/src/api/http: the error chain of the failed
// action, as plain text); the fake sends it in mode fail-boot.
const BootErrorBody = "Error from API: The VM could not boot: Error booting VM: Failed to create the vsock device: Error creating Unix Domain Socket listener: Address in use (os error 98)"

// FDListener hands out FDConns, so that a fake API server sees the file
// descriptors a client sends with SCM_RIGHTS, as Cloud Hypervisor's
// micro_http server does.
type FDListener struct{ *net.UnixListener }

// Accept returns the next connection as an *FDConn.
func (l FDListener) Accept() (net.Conn, error) {
	c, err := l.AcceptUnix()
	if err != nil {
		return nil, err
	}
	return &FDConn{UnixConn: c}, nil
}

// FDConn is a unix connection whose reads also collect the file
// descriptors that arrive as SCM_RIGHTS ancillary data.
type FDConn struct {
	*net.UnixConn
	mu    sync.Mutex
	files []*os.File
}

// Read reads like net.UnixConn.Read and keeps any received descriptors.
func (c *FDConn) Read(p []byte) (int, error) {
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

// TakeFiles returns the descriptors received so far and forgets them.
func (c *FDConn) TakeFiles() []*os.File {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.files
	c.files = nil
	return f
}

// connKey is the request context key of the request's connection.
type connKey struct{}

// WithConnContext makes srv put each connection into its requests'
// contexts (ReceivedFiles reads it).
func WithConnContext(srv *http.Server) *http.Server {
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, c)
	}
	return srv
}

// ReceivedFiles returns the descriptors that came with r (SCM_RIGHTS),
// when the server runs on an FDListener with WithConnContext.
func ReceivedFiles(r *http.Request) []*os.File {
	c, ok := r.Context().Value(connKey{}).(*FDConn)
	if !ok {
		return nil
	}
	return c.TakeFiles()
}

// TapFacts is what a fake Cloud Hypervisor learns about a descriptor it
// was given: the tap's name and flags (TUNGETIFF) and the inode of the
// network namespace the tap lives in (TUNGETDEVNETNS).
type TapFacts struct {
	// Name is the tap's interface name.
	Name string `json:"name"`
	// Flags are its IFF_* flags (IFF_TAP, IFF_NO_PI, IFF_VNET_HDR, ...).
	Flags uint16 `json:"flags"`
	// NetNS is the inode of the network namespace the tap lives in.
	NetNS uint64 `json:"netns"`
	// Err says what failed; the other fields are then incomplete.
	Err string `json:"err,omitempty"`
}

// DescribeTap reads TapFacts from f; Err says what failed for a
// descriptor that is no tap.
func DescribeTap(f *os.File) TapFacts {
	rc, err := f.SyscallConn()
	if err != nil {
		return TapFacts{Err: err.Error()}
	}
	var tf TapFacts
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

// ThreadNetNS returns the inode of the calling thread's network namespace.
// Not /proc/self, which is the main thread's: a goroutine locked to the
// main thread may have moved it to another namespace.
func ThreadNetNS() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// AddNetErrorBody is the fake's answer to a refused vm.add-net, worded
// like Cloud Hypervisor's error chain.
const AddNetErrorBody = "Error from API: The new device could not be added to the VM: Error creating virtio-net device: Error getting tap interface flags"

// RecordName is the file in the state directory (the API socket's
// directory) where the fake cloud-hypervisor records what it was given.
const RecordName = "fake-clh.json"

// Record is what the fake cloud-hypervisor writes to RecordName
// after every call: the network namespace it runs in, the calls in order,
// the vm.create and vm.add-net bodies, and the taps that came with
// vm.add-net as SCM_RIGHTS.
type Record struct {
	// NetNS is the inode of the network namespace the fake runs in.
	NetNS uint64 `json:"netns"`
	// Calls are the requests, "METHOD /api/v1/endpoint", in order.
	Calls []string `json:"calls"`
	// Create is the last vm.create body.
	Create json.RawMessage `json:"create,omitempty"`
	// AddNet is the last accepted vm.add-net body.
	AddNet json.RawMessage `json:"add_net,omitempty"`
	// Taps describes every descriptor accepted with vm.add-net.
	Taps []TapFacts `json:"taps,omitempty"`
}

// ReadRecord reads the fake's record from stateDir; the test fails when
// there is none or it does not parse.
func ReadRecord(t testing.TB, stateDir string) *Record {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, RecordName))
	require.NoError(t, err, "the fake cloud-hypervisor's record")
	var r Record
	require.NoError(t, json.Unmarshal(b, &r))
	return &r
}

// Run is the fake cloud-hypervisor's main, with the behaviour mode names
// (see ModeEnv) and the process's arguments without the binary; it
// returns the exit status. It implements the part of cloud-hypervisor
// that package cloudhypervisor drives: --api-socket path=P, vmm.ping, vm.create, vm.add-net (with tap
// descriptors over SCM_RIGHTS), vm.boot, vmm.shutdown. It records what it
// got in <dir of P>/fake-clh.json (Record).
func Run(mode string, args []string) int {
	if mode == "exit" {
		fmt.Fprintln(os.Stderr, "Error parsing config: Error parsing --api-socket: unknown option")
		return 1
	}
	if len(args) != 2 || args[0] != "--api-socket" || !strings.HasPrefix(args[1], "path=") {
		fmt.Fprintf(os.Stderr, "fake cloud-hypervisor: unexpected arguments %q\n", args)
		return 2
	}
	sock := strings.TrimPrefix(args[1], "path=")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	rec := &Record{}
	if rec.NetNS, err = ThreadNetNS(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	recPath := filepath.Join(filepath.Dir(sock), RecordName)
	save := func() {
		b, _ := json.Marshal(rec)
		if err := os.WriteFile(recPath, b, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	var kept []*os.File // the taps, held like Cloud Hypervisor holds them
	created := false
	done := make(chan int, 1)
	srv := WithConnContext(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		files := ReceivedFiles(r)
		body, _ := io.ReadAll(r.Body)
		rec.Calls = append(rec.Calls, r.Method+" "+r.URL.Path)
		defer save()
		switch r.URL.Path {
		case "/api/v1/vmm.ping":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"version":"v48.0-fake","pid":%d}`, os.Getpid())
		case "/api/v1/vm.create":
			created = true
			rec.Create = body
			w.WriteHeader(http.StatusNoContent)
		case "/api/v1/vm.add-net":
			switch {
			case !created:
				w.WriteHeader(http.StatusNotFound)
			case len(files) == 0 || mode == "fail-add-net":
				w.WriteHeader(http.StatusInternalServerError)
				fmt.Fprint(w, AddNetErrorBody)
			default:
				rec.AddNet = body
				for _, f := range files {
					rec.Taps = append(rec.Taps, DescribeTap(f))
				}
				kept = append(kept, files...)
				w.WriteHeader(http.StatusNoContent)
			}
		case "/api/v1/vm.boot":
			switch {
			case !created:
				w.WriteHeader(http.StatusNotFound)
			case mode == "fail-boot":
				fmt.Fprintln(os.Stderr, "cloud-hypervisor: Error booting VM: failed to open /dev/kvm")
				w.WriteHeader(http.StatusInternalServerError)
				fmt.Fprint(w, BootErrorBody)
			default:
				w.WriteHeader(http.StatusNoContent)
			}
		case "/api/v1/vmm.shutdown":
			save()
			w.WriteHeader(http.StatusNoContent)
			if mode != "deaf" {
				w.(http.Flusher).Flush()
				os.Exit(0)
			}
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	})})
	srv.Serve(FDListener{UnixListener: l})
	return <-done
}
