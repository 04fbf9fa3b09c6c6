package cloudhypervisor

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/vmm/cloudhypervisor/clhtest"
)

// fakeAPI serves Cloud Hypervisor's API on a unix socket. It validates
// every request and every response it sends against the OpenAPI schema,
// and keeps the VM config it was given.
type fakeAPI struct {
	t      *testing.T
	schema *apiSchema
	srv    *httptest.Server
	path   string

	mu       sync.Mutex
	created  *VmConfig
	added    []NetConfig
	taps     []clhtest.TapFacts
	state    VmState
	failBoot bool
	calls    []string
}

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{t: t, schema: loadSchema(t), path: filepath.Join(t.TempDir(), "api.sock")}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: f.path, Net: "unix"})
	require.NoError(t, err)
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.Listener = clhtest.FDListener{UnixListener: l}
	clhtest.WithConnContext(f.srv.Config)
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	files := clhtest.ReceivedFiles(r)
	defer func() {
		for _, file := range files {
			file.Close()
		}
	}()
	in := f.schema.checkRequest(f.t, r)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path)
	reply := func(status int, v any) {
		var b []byte
		if v != nil {
			var err error
			b, err = json.Marshal(v)
			require.NoError(f.t, err)
		}
		f.schema.checkResponse(f.t, in, status, b)
		if b != nil {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		w.Write(b)
	}
	switch r.URL.Path {
	case "/api/v1/vmm.ping":
		reply(http.StatusOK, VmmPingResponse{Version: "v48.0", PID: int64(os.Getpid()), Features: []string{"kvm", "tdx", "sev_snp", "igvm"}})
	case "/api/v1/vm.create":
		var cfg VmConfig
		require.NoError(f.t, json.NewDecoder(r.Body).Decode(&cfg))
		f.created, f.state = &cfg, VmCreated
		reply(http.StatusNoContent, nil)
	case "/api/v1/vm.add-net":
		var nc NetConfig
		require.NoError(f.t, json.NewDecoder(r.Body).Decode(&nc))
		if f.created == nil {
			reply(http.StatusNotFound, nil)
			return
		}
		f.added = append(f.added, nc)
		for _, file := range files {
			f.taps = append(f.taps, clhtest.DescribeTap(file))
		}
		reply(http.StatusNoContent, nil)
	case "/api/v1/vm.boot":
		switch {
		case f.created == nil:
			reply(http.StatusNotFound, nil)
		case f.failBoot:
			// The schema lists no 500 for vm.boot; Cloud Hypervisor sends
			// one with its error text anyway.
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(clhtest.BootErrorBody + "\n"))
		default:
			f.state = VmRunning
			reply(http.StatusNoContent, nil)
		}
	case "/api/v1/vm.info":
		if f.created == nil {
			reply(http.StatusNotFound, nil)
			return
		}
		reply(http.StatusOK, VmInfo{Config: *f.created, State: f.state, MemoryActualSize: f.created.Memory.Size})
	case "/api/v1/vm.shutdown":
		if f.state != VmRunning {
			reply(http.StatusMethodNotAllowed, nil)
			return
		}
		f.state = VmShutdown
		reply(http.StatusNoContent, nil)
	case "/api/v1/vmm.shutdown":
		reply(http.StatusNoContent, nil)
	default:
		f.t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
	}
}

func TestClientLifecycle(t *testing.T) {
	f := newFakeAPI(t)
	c := NewClient(f.path)
	ctx := testCtx(t, 10e9)

	ping, err := c.Ping(ctx)
	require.NoError(t, err)
	require.Equal(t, "v48.0", ping.Version)
	require.Contains(t, ping.Features, "sev_snp")

	_, err = c.VMInfo(ctx)
	require.ErrorIs(t, err, errdefs.ErrNotFound, "vm.info before vm.create")
	require.ErrorIs(t, c.BootVM(ctx), errdefs.ErrNotFound, "vm.boot before vm.create")

	for name, cfg := range teeConfigs(t) {
		require.NoError(t, c.CreateVM(ctx, cfg.VMConfig()), name)
		f.mu.Lock()
		require.Equal(t, cfg.VMConfig(), f.created, "%s: the server got the config the client sent", name)
		f.mu.Unlock()
	}
	require.NoError(t, c.BootVM(ctx))
	info, err := c.VMInfo(ctx)
	require.NoError(t, err)
	require.Equal(t, VmRunning, info.State)
	require.Equal(t, int64(128)<<20, info.Config.Memory.Size)

	require.NoError(t, c.ShutdownVM(ctx))
	err = c.ShutdownVM(ctx)
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusMethodNotAllowed, apiErr.Status)
	require.ErrorIs(t, err, errdefs.ErrFailedPrecondition)
	require.NoError(t, c.ShutdownVMM(ctx))

	f.mu.Lock()
	defer f.mu.Unlock()
	require.Contains(t, f.calls, "PUT /api/v1/vmm.shutdown")
}

func TestClientServerError(t *testing.T) {
	f := newFakeAPI(t)
	f.failBoot = true
	c := NewClient(f.path)
	ctx := testCtx(t, 10e9)
	require.NoError(t, c.CreateVM(ctx, testConfig(t).VMConfig()))
	err := c.BootVM(ctx)
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusInternalServerError, apiErr.Status)
	require.Equal(t, "vm.boot", apiErr.Op)
	require.Equal(t, clhtest.BootErrorBody, apiErr.Body)
	require.ErrorIs(t, err, errdefs.ErrUnknown)
	require.EqualError(t, err, "cloud-hypervisor vm.boot: HTTP 500 Internal Server Error: "+clhtest.BootErrorBody)
}

func TestClientUnreachable(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t, 10e9)

	missing := filepath.Join(dir, "missing.sock")
	_, err := NewClient(missing).Ping(ctx)
	require.ErrorIs(t, err, syscall.ENOENT)
	require.ErrorIs(t, err, errdefs.ErrUnavailable)
	require.ErrorContains(t, err, "cloud-hypervisor vmm.ping on "+missing+": ")
	require.ErrorContains(t, err, "the socket does not exist")

	// A socket file whose listener is gone: connection refused.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	require.NoError(t, err)
	l.SetUnlinkOnClose(false)
	require.NoError(t, l.Close())
	err = NewClient(stale).BootVM(ctx)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.ErrorIs(t, err, errdefs.ErrUnavailable)
	require.ErrorContains(t, err, "cloud-hypervisor exited and left a stale socket")
}

// TestClientAddNetPassesTap sends a tap that lives in another network
// namespace with vm.add-net: the server receives that very tap (same name,
// flags and namespace) with a body the schema accepts, and the client's
// file keeps its non-blocking mode.
func TestClientAddNetPassesTap(t *testing.T) {
	tap, _, nsIno := newTapInNetns(t, "cctap7")
	f := newFakeAPI(t)
	c := NewClient(f.path)
	ctx := testCtx(t, 10e9)

	nc := &NetConfig{MAC: "0a:58:0a:63:00:02", MTU: 1450, NumQueues: 2}
	require.ErrorIs(t, c.AddNet(ctx, nc, []*os.File{tap}), errdefs.ErrNotFound, "vm.add-net before vm.create")
	require.NoError(t, c.CreateVM(ctx, testConfig(t).VMConfig()))
	require.NoError(t, c.AddNet(ctx, nc, []*os.File{tap}))

	f.mu.Lock()
	require.Equal(t, []NetConfig{*nc}, f.added)
	require.Len(t, f.taps, 1)
	got := f.taps[0]
	f.mu.Unlock()
	require.Empty(t, got.Err)
	require.Equal(t, "cctap7", got.Name)
	require.Equal(t, uint16(unix.IFF_TAP|unix.IFF_NO_PI|unix.IFF_VNET_HDR), got.Flags&(unix.IFF_TAP|unix.IFF_NO_PI|unix.IFF_VNET_HDR))
	require.Equal(t, nsIno, got.NetNS, "the tap stays in its own namespace")
	host, err := clhtest.ThreadNetNS()
	require.NoError(t, err)
	require.NotEqual(t, host, got.NetNS)

	rc, err := tap.SyscallConn()
	require.NoError(t, err)
	var flags int
	require.NoError(t, rc.Control(func(fd uintptr) { flags, err = unix.FcntlInt(fd, unix.F_GETFL, 0) }))
	require.NoError(t, err)
	require.NotZero(t, flags&unix.O_NONBLOCK, "AddNet must not switch the caller's tap to blocking mode")
}

// TestClientAddNetErrors: no descriptors is a caller error; a refusal
// carries Cloud Hypervisor's status.
func TestClientAddNetErrors(t *testing.T) {
	f := newFakeAPI(t)
	c := NewClient(f.path)
	ctx := testCtx(t, 10e9)
	err := c.AddNet(ctx, &NetConfig{NumQueues: 2}, nil)
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	require.ErrorContains(t, err, "no tap file descriptors to pass")

	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	err = c.AddNet(ctx, &NetConfig{NumQueues: 2}, []*os.File{r})
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, "vm.add-net", apiErr.Op)
	require.Equal(t, http.StatusNotFound, apiErr.Status)

	err = NewClient(filepath.Join(t.TempDir(), "missing.sock")).AddNet(ctx, &NetConfig{NumQueues: 2}, []*os.File{r})
	require.ErrorIs(t, err, errdefs.ErrUnavailable)
}
