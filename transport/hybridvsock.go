package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
)

// KindHybridVsock is the Cloud Hypervisor / Firecracker "hybrid vsock":
// the guest listens on plain AF_VSOCK, and the VMM exposes the guest's
// vsock as a host unix socket speaking the CONNECT protocol (see
// ConnectHybridVsock). ParseKind and Resolve do not return it: the shim
// picks it for Cloud Hypervisor.
const KindHybridVsock Kind = "hybrid-vsock"

// hybridRetryInterval is how long ConnectHybridVsock waits between tries.
const hybridRetryInterval = 50 * time.Millisecond

// maxHybridReply bounds the VMM's "OK <port>\n" line, bytes: "OK " and a
// 10-digit port plus "\n" is 14; anything much longer is not an answer.
const maxHybridReply = 32

// ErrHybridConnectRefused is wrapped (together with syscall.ECONNREFUSED)
// when the VMM closes a hybrid vsock connection without answering CONNECT:
// nothing in the guest listens on the port yet, or the VMM gave up on the
// guest's answer.
var ErrHybridConnectRefused = errors.New("the VMM closed the connection without answering CONNECT")

// hybridDialFunc makes one hybrid vsock connection; tests replace it.
type hybridDialFunc func(ctx context.Context, path string, port uint32) (net.Conn, error)

// ConnectHybridVsock is the host side of the agent transport for Cloud
// Hypervisor's hybrid vsock. socketPath is the VM's vsock socket
// (VmConfig vsock.socket) and port the agent's vsock port
// (DefaultVsockPort for cc-agent). One connection is:
//
//  1. connect to socketPath;
//  2. write "CONNECT <port>\n";
//  3. read the line "OK <host port>\n";
//  4. the connection is then a raw byte stream to the guest's listener.
//
// It retries every 50 ms while the socket does not exist or refuses
// connections (the VM is not booted yet) and while the VMM closes the
// connection without an answer (ErrHybridConnectRefused: the agent does not
// listen yet). The first connection is kept and returned by the first Dial.
// Other failures end it at once: a reply that is not "OK <port>"
// (errdefs.ErrFailedPrecondition: the socket is not a hybrid vsock socket),
// the VMM closing the connection mid-reply (io.ErrUnexpectedEOF). When ctx
// ends first the error names the phase that was waiting ("connect",
// "send CONNECT", "wait for OK"), the last refusal and the attempt count,
// and wraps ctx.Err().
//
// Each Dial then makes one new connection the same way, without retrying.
// Connections are *net.UnixConn. CloseWrite on one shuts down the host's
// side, but Cloud Hypervisor's muxer (inherited from Firecracker) turns the
// host's EOF into a full vsock shutdown, so unlike AF_VSOCK the agent can
// no longer write back afterwards: use CloseWrite only on connections that
// carry data one way (stdin).
func ConnectHybridVsock(ctx context.Context, socketPath string, port uint32) (Dialer, error) {
	return connectHybridVsock(ctx, socketPath, port, dialHybridVsock, hybridRetryInterval)
}

func connectHybridVsock(ctx context.Context, path string, port uint32, dial hybridDialFunc, interval time.Duration) (Dialer, error) {
	once := func(ctx context.Context) (net.Conn, error) { return dial(ctx, path, port) }
	c, g, err := retryDial(ctx, interval, once, isHybridNotReady)
	switch {
	case err != nil:
		return nil, err
	case g == nil:
		return &keptDialer{what: fmt.Sprintf("hybrid vsock %s port %d", path, port), dial: once, first: c}, nil
	case g.last == nil:
		return nil, g.cut // the first attempt was cut short: its error names its phase
	case g.cut == nil:
		return nil, fmt.Errorf("connect to vsock port %d through %s: gave up after %d attempts in %s: %w: %w", port, path, g.attempts, g.took, g.last, ctx.Err())
	}
	return nil, fmt.Errorf("%w (after %d attempts in %s; the one before: %w)", g.cut, g.attempts, g.took, g.last)
}

// isHybridNotReady reports whether a failed connection means the VM or its
// agent is not up yet.
func isHybridNotReady(err error) bool {
	return isSocketNotReady(err) || errors.Is(err, ErrHybridConnectRefused)
}

// dialHybridVsock makes one connection and runs the CONNECT handshake.
func dialHybridVsock(ctx context.Context, path string, port uint32) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if cerr := ctxEnded(ctx); cerr != nil {
			return nil, hybridPhaseError(path, port, "connect", "the socket did not accept", cerr)
		}
		return nil, fmt.Errorf("connect to hybrid vsock %s: %s (%s): %w", path, errnoText(err), hybridSocketHint(err), err)
	}
	if err := hybridHandshake(ctx, c, path, port); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func hybridSocketHint(err error) string {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return "the VMM has not created its vsock socket yet; is the VM booted with a vsock device on this socket?"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nobody accepts on the socket: the VMM exited and left it behind"
	default:
		return "the VMM's listen backlog is full, or the path is not its vsock socket"
	}
}

// hybridHandshake writes CONNECT and reads the VMM's "OK <port>" line one
// byte at a time, so that no byte of the guest's stream is consumed.
func hybridHandshake(ctx context.Context, c net.Conn, path string, port uint32) error {
	phase := "send CONNECT"
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var reply []byte
	fail := func(err error) error {
		if ctx.Err() != nil {
			what := "the VMM did not take the bytes"
			if phase == "wait for OK" {
				what = fmt.Sprintf("no answer after %d bytes %q (the guest has not answered the connection request)", len(reply), reply)
			}
			return hybridPhaseError(path, port, phase, what, ctx.Err())
		}
		return err
	}
	if _, err := io.WriteString(c, "CONNECT "+strconv.FormatUint(uint64(port), 10)+"\n"); err != nil {
		return fail(fmt.Errorf("send CONNECT %d on hybrid vsock %s: %w", port, path, err))
	}
	phase = "wait for OK"
	var b [1]byte
	for {
		_, err := c.Read(b[:])
		switch {
		case errors.Is(err, io.EOF) && len(reply) == 0:
			return fail(fmt.Errorf("connect to vsock port %d through %s: %w (nothing in the guest listens on port %d yet, or it is the wrong port): %w",
				port, path, ErrHybridConnectRefused, port, syscall.ECONNREFUSED))
		case errors.Is(err, io.EOF):
			return fail(fmt.Errorf("connect to vsock port %d through %s: the VMM closed the connection mid-reply after %q: %w", port, path, reply, io.ErrUnexpectedEOF))
		case err != nil:
			return fail(fmt.Errorf("wait for OK to CONNECT %d on hybrid vsock %s: %w", port, path, err))
		}
		if b[0] == '\n' {
			break
		}
		reply = append(reply, b[0])
		if len(reply) > maxHybridReply {
			return fail(fmt.Errorf("connect to vsock port %d through %s: the peer sent %q..., want \"OK <port>\\n\": is %s a Cloud Hypervisor or Firecracker vsock socket? %w",
				port, path, reply, path, errdefs.ErrFailedPrecondition))
		}
	}
	if stop() {
		c.SetDeadline(time.Time{})
	} else {
		return hybridPhaseError(path, port, phase, "the answer came as the deadline passed", ctx.Err())
	}
	p, ok := strings.CutPrefix(string(reply), "OK ")
	if _, err := strconv.ParseUint(p, 10, 32); !ok || err != nil {
		return fmt.Errorf("connect to vsock port %d through %s: the VMM replied %q, want \"OK <port>\": %w", port, path, reply, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// hybridPhaseError words a handshake that ctx cut short.
func hybridPhaseError(path string, port uint32, phase, what string, err error) error {
	return fmt.Errorf("connect to vsock port %d through %s: timed out in phase %q: %s: %w", port, path, phase, what, err)
}

// ctxEnded returns ctx.Err(), or context.DeadlineExceeded when ctx's
// deadline has passed but its timer has not fired yet (a dial bounded by
// that deadline can fail with an i/o timeout in between).
func ctxEnded(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}
