package cloudhypervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// apiBase is the URL prefix of every endpoint (the schema's server URL). The
// host part is ignored: the client always dials the unix socket.
const apiBase = "http://localhost/api/v1"

// maxErrorBody bounds how much of an error response is kept (bytes).
const maxErrorBody = 4096

// Client calls Cloud Hypervisor's REST API over its --api-socket unix socket.
// It is safe for concurrent use, but Cloud Hypervisor handles one request at
// a time.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a Client for the API socket at socketPath. It does not
// connect: every call dials the socket afresh.
func NewClient(socketPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		DisableKeepAlives: true,
	}
	return &Client{socket: socketPath, http: &http.Client{Transport: tr}}
}

// APIError is a non-2xx answer from Cloud Hypervisor. Body is its own error
// text (for example "Error from API: The VM could not boot: ..."), trimmed
// and cut at 4 KiB. It matches an errdefs class through errors.Is: 400 is
// ErrInvalidArgument, 404 ErrNotFound (no VM created yet), 405
// ErrFailedPrecondition (the VM is in the wrong state), 409 ErrAlreadyExists,
// 429 ErrUnavailable, anything else ErrUnknown.
type APIError struct {
	// Op is the endpoint, for example "vm.boot".
	Op string
	// Status is the HTTP status code.
	Status int
	// Body is Cloud Hypervisor's error text.
	Body string
}

func (e *APIError) Error() string {
	body := e.Body
	if body == "" {
		body = "no error text"
	}
	return fmt.Sprintf("cloud-hypervisor %s: HTTP %d %s: %s", e.Op, e.Status, http.StatusText(e.Status), body)
}

// Unwrap returns the errdefs class of the status.
func (e *APIError) Unwrap() error {
	switch e.Status {
	case http.StatusBadRequest:
		return errdefs.ErrInvalidArgument
	case http.StatusNotFound:
		return errdefs.ErrNotFound
	case http.StatusMethodNotAllowed:
		return errdefs.ErrFailedPrecondition
	case http.StatusConflict:
		return errdefs.ErrAlreadyExists
	case http.StatusTooManyRequests:
		return errdefs.ErrUnavailable
	default:
		return errdefs.ErrUnknown
	}
}

// Ping calls GET /vmm.ping and returns Cloud Hypervisor's version and
// features. It is the call that says the API server is up.
func (c *Client) Ping(ctx context.Context) (*VmmPingResponse, error) {
	var out VmmPingResponse
	if err := c.do(ctx, http.MethodGet, "vmm.ping", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateVM calls PUT /vm.create with cfg. The VM is created, not booted.
func (c *Client) CreateVM(ctx context.Context, cfg *VmConfig) error {
	return c.do(ctx, http.MethodPut, "vm.create", cfg, nil)
}

// BootVM calls PUT /vm.boot. A 404 (ErrNotFound) means no VM was created.
func (c *Client) BootVM(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "vm.boot", nil, nil)
}

// AddNet calls PUT /vm.add-net with cfg and passes taps, open tap queues
// (/dev/net/tun after TUNSETIFF with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR), to
// Cloud Hypervisor as SCM_RIGHTS ancillary data on the API socket, in the
// same message as the request: that is the only way its API takes file
// descriptors (it ignores an "fds" list in the body). Set cfg.NumQueues to
// twice len(taps). Called between CreateVM and BootVM it adds the NIC
// cold; on a running VM it hot-plugs it. Cloud Hypervisor keeps its own
// duplicates, so the caller may close taps afterwards. The files' blocking
// mode is left as it is.
//
// Errors: errdefs.ErrInvalidArgument when taps is empty; an *APIError for
// a non-2xx answer (400 for a bad config or a file that is no tap, 404 when
// no VM was created); errdefs.ErrUnavailable when the socket cannot be
// reached; ctx's error when it ends first.
func (c *Client) AddNet(ctx context.Context, cfg *NetConfig, taps []*os.File) error {
	const op = "vm.add-net"
	if len(taps) == 0 {
		return fmt.Errorf("cloud-hypervisor %s: no tap file descriptors to pass: give at least one open tap queue: %w", op, errdefs.ErrInvalidArgument)
	}
	body, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("cloud-hypervisor %s: encode request: %w", op, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, apiBase+"/"+op, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("cloud-hypervisor %s: %w", op, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Close = true
	var msg bytes.Buffer
	if err := req.Write(&msg); err != nil {
		return fmt.Errorf("cloud-hypervisor %s: encode request: %w", op, err)
	}
	fds, err := dupFiles(taps)
	if err != nil {
		return fmt.Errorf("cloud-hypervisor %s: %w", op, err)
	}
	defer closeAll(fds)

	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return c.transportError(op, err)
	}
	conn := nc.(*net.UnixConn)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	b := msg.Bytes()
	n, _, err := conn.WriteMsgUnix(b, unix.UnixRights(fds...), nil)
	if err == nil && n < len(b) {
		_, err = conn.Write(b[n:])
	}
	if err != nil {
		return c.exchangeError(ctx, op, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return c.exchangeError(ctx, op, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return &APIError{Op: op, Status: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	return nil
}

// exchangeError is the error for a failed write or read on an API
// connection: ctx's error when it ended, else a transport error.
func (c *Client) exchangeError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("cloud-hypervisor %s on %s: %w", op, c.socket, ctx.Err())
	}
	return c.transportError(op, err)
}

// dupFiles duplicates the descriptors of files (close-on-exec) without
// touching their blocking mode, which os.File.Fd would change.
func dupFiles(files []*os.File) ([]int, error) {
	var fds []int
	for _, f := range files {
		rc, err := f.SyscallConn()
		if err != nil {
			closeAll(fds)
			return nil, fmt.Errorf("tap file %s: %w", f.Name(), err)
		}
		var dupErr error
		if err := rc.Control(func(fd uintptr) {
			var nfd int
			nfd, dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
			if dupErr == nil {
				fds = append(fds, nfd)
			}
		}); err != nil {
			dupErr = err
		}
		if dupErr != nil {
			closeAll(fds)
			return nil, fmt.Errorf("duplicate tap file %s: %w", f.Name(), dupErr)
		}
	}
	return fds, nil
}

// closeAll closes fds, ignoring errors.
func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// VMInfo calls GET /vm.info. A 404 (ErrNotFound) means no VM was created.
func (c *Client) VMInfo(ctx context.Context) (*VmInfo, error) {
	var out VmInfo
	if err := c.do(ctx, http.MethodGet, "vm.info", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ShutdownVM calls PUT /vm.shutdown: the guest stops, the VMM keeps running.
func (c *Client) ShutdownVM(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "vm.shutdown", nil, nil)
}

// ShutdownVMM calls PUT /vmm.shutdown: Cloud Hypervisor stops the VM, if
// any, and exits.
func (c *Client) ShutdownVMM(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "vmm.shutdown", nil, nil)
}

// do sends one request. in, when not nil, is sent as a JSON body; out, when
// not nil, receives the JSON answer.
func (c *Client) do(ctx context.Context, method, op string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("cloud-hypervisor %s: encode request: %w", op, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, apiBase+"/"+op, body)
	if err != nil {
		return fmt.Errorf("cloud-hypervisor %s: %w", op, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if out != nil {
		req.Header.Set("Accept", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.transportError(op, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return &APIError{Op: op, Status: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	if out == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("cloud-hypervisor %s: decode the HTTP %d answer: %w", op, resp.StatusCode, err)
	}
	return nil
}

// transportError words a failure to reach the API socket.
func (c *Client) transportError(op string, err error) error {
	var hint string
	switch {
	case errors.Is(err, syscall.ENOENT):
		hint = "the socket does not exist: cloud-hypervisor has not started its API server, or it exited"
	case errors.Is(err, syscall.ECONNREFUSED):
		hint = "nobody accepts on the socket: cloud-hypervisor exited and left a stale socket"
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		hint = "cloud-hypervisor closed the connection without an answer (it is exiting)"
	default:
		hint = "check that cloud-hypervisor runs with --api-socket path=" + c.socket
	}
	return fmt.Errorf("cloud-hypervisor %s on %s: %w (%s): %w", op, c.socket, err, hint, errdefs.ErrUnavailable)
}
