package cloudhypervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
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
