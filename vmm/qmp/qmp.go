// Package qmp is a minimal client for the QEMU Machine Protocol (QMP) over a
// unix socket, following QEMU's docs/interop/qmp-spec: the server sends a
// greeting, the client negotiates with qmp_capabilities, then each command
// ({"execute": ..., "arguments": ..., "id": ...}) gets one reply ("return" or
// "error") while asynchronous events ({"event": ...}) may arrive in between.
//
// A Client runs one command at a time. QEMU serves one QMP client per socket
// at a time, so close a Client as soon as it is no longer needed.
package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// maxEvents bounds the events a Client keeps between Events calls; older
// events are dropped first.
const maxEvents = 64

// RunState is a VM run state as reported by query-status (QAPI RunState).
type RunState string

// Common run states; QEMU defines more (see qapi/run-state.json).
const (
	RunStateRunning       RunState = "running"
	RunStatePaused        RunState = "paused"
	RunStatePrelaunch     RunState = "prelaunch"
	RunStateShutdown      RunState = "shutdown"
	RunStateGuestPanicked RunState = "guest-panicked"
	RunStateInternalError RunState = "internal-error"
)

// Error is an error reply from QEMU.
type Error struct {
	// Command is the QMP command that failed.
	Command string
	// Class is QMP's error class, for example "GenericError" or
	// "CommandNotFound".
	Class string
	// Desc is QEMU's human-readable description.
	Desc string
}

func (e *Error) Error() string {
	return fmt.Sprintf("qmp command %s failed: %s: %s", e.Command, e.Class, e.Desc)
}

// Event is an asynchronous QMP event, such as SHUTDOWN or GUEST_PANICKED.
type Event struct {
	// Name is the event name, for example "SHUTDOWN".
	Name string
	// Data is the event's "data" member as raw JSON, nil if absent.
	Data json.RawMessage
	// Timestamp is when QEMU emitted the event.
	Timestamp time.Time
}

// Client is a QMP connection. Its methods are safe for concurrent use; they
// run one command at a time. After an I/O error or a context ending in the
// middle of a command, the connection is out of step and every later command
// returns that first error: Close it and Connect again.
type Client struct {
	path string
	conn net.Conn
	dec  *json.Decoder

	mu      sync.Mutex
	nextID  uint64
	broken  error
	events  []Event
	version string
}

// message is any line QEMU sends.
type message struct {
	QMP *struct {
		Version struct {
			QEMU struct {
				Major, Minor, Micro int
			} `json:"qemu"`
			Package string `json:"package"`
		} `json:"version"`
	} `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	ID        json.RawMessage `json:"id"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// Connect dials the QMP unix socket at path, reads QEMU's greeting and
// negotiates capabilities (qmp_capabilities). ctx bounds the whole handshake.
// Errors name the socket path; a socket that exists but never greets (QEMU
// serves one client at a time) ends with ctx's error.
func Connect(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect qmp socket %s: %w", path, err)
	}
	c := &Client{path: path, conn: conn, dec: json.NewDecoder(conn)}
	if err := c.handshake(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) handshake(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	stop := c.watch(ctx)
	var greeting message
	err := c.dec.Decode(&greeting)
	stop()
	if err != nil {
		return fmt.Errorf("read qmp greeting from %s: %w", c.path, c.ioError(ctx, err))
	}
	if greeting.QMP == nil {
		return fmt.Errorf("read qmp greeting from %s: got a message without a \"QMP\" member: is this a QMP socket?", c.path)
	}
	v := greeting.QMP.Version.QEMU
	c.version = fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
	if err := c.execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		return fmt.Errorf("negotiate qmp capabilities on %s: %w", c.path, err)
	}
	return nil
}

// Version returns QEMU's version from the greeting, as "major.minor.micro".
func (c *Client) Version() string { return c.version }

// Execute runs the QMP command cmd with arguments args (marshalled to a JSON
// object; nil for none) and unmarshals its "return" value into out (nil to
// discard). Events that arrive before the reply are kept for Events. An error
// reply is returned as *Error; ctx bounds the exchange.
func (c *Client) Execute(ctx context.Context, cmd string, args, out any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.execute(ctx, cmd, args, out)
}

func (c *Client) execute(ctx context.Context, cmd string, args, out any) error {
	if c.broken != nil {
		return fmt.Errorf("qmp command %s on %s: connection unusable after an earlier error: %w", cmd, c.path, c.broken)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("qmp command %s on %s: %w", cmd, c.path, err)
	}
	c.nextID++
	id := strconv.FormatUint(c.nextID, 10)
	req := struct {
		Execute   string          `json:"execute"`
		Arguments any             `json:"arguments,omitempty"`
		ID        json.RawMessage `json:"id"`
	}{cmd, args, json.RawMessage(id)}
	line, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode qmp command %s arguments: %w", cmd, err)
	}
	stop := c.watch(ctx)
	defer stop()
	if _, err := c.conn.Write(append(line, '\n')); err != nil {
		c.broken = c.ioError(ctx, err)
		return fmt.Errorf("send qmp command %s to %s: %w", cmd, c.path, c.broken)
	}
	for {
		var m message
		if err := c.dec.Decode(&m); err != nil {
			c.broken = c.ioError(ctx, err)
			return fmt.Errorf("read qmp reply to %s from %s: %w", cmd, c.path, c.broken)
		}
		if m.Event != "" {
			c.keepEvent(&m)
			continue
		}
		// A reply without an id answers a request QEMU could not parse
		// far enough to find the id: that can only be ours.
		if len(m.ID) > 0 && string(m.ID) != id {
			continue
		}
		if m.Error != nil {
			return &Error{Command: cmd, Class: m.Error.Class, Desc: m.Error.Desc}
		}
		if m.Return == nil {
			c.broken = fmt.Errorf("reply %s has neither \"return\" nor \"error\"", truncate(m))
			return fmt.Errorf("read qmp reply to %s from %s: %w", cmd, c.path, c.broken)
		}
		if out != nil {
			if err := json.Unmarshal(m.Return, out); err != nil {
				return fmt.Errorf("decode qmp reply to %s: %w", cmd, err)
			}
		}
		return nil
	}
}

// watch makes blocked I/O on the connection return when ctx ends, and
// applies ctx's deadline. The returned func undoes both.
func (c *Client) watch(ctx context.Context) func() {
	if d, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stop()
		c.conn.SetDeadline(time.Time{})
	}
}

// ioError turns a deadline error caused by ctx into ctx's own error. The
// socket deadline can fire a moment before ctx records its own expiry.
func (c *Client) ioError(ctx context.Context, err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return err
}

func (c *Client) keepEvent(m *message) {
	if len(c.events) == maxEvents {
		c.events = append(c.events[:0], c.events[1:]...)
	}
	c.events = append(c.events, Event{
		Name:      m.Event,
		Data:      m.Data,
		Timestamp: time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000),
	})
}

// Events returns the events received so far (at most the last 64), oldest
// first, and forgets them. Events arrive only while a command runs.
func (c *Client) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	ev := c.events
	c.events = nil
	return ev
}

// Status runs query-status and returns the VM's run state.
func (c *Client) Status(ctx context.Context) (RunState, error) {
	var st struct {
		Status  RunState `json:"status"`
		Running bool     `json:"running"`
	}
	if err := c.Execute(ctx, "query-status", nil, &st); err != nil {
		return "", err
	}
	return st.Status, nil
}

// Quit runs quit: QEMU stops the VM at once and exits with status 0. QEMU may
// close the connection before its reply arrives; Quit treats that as success.
func (c *Client) Quit(ctx context.Context) error {
	err := c.Execute(ctx, "quit", nil, nil)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	return err
}

// SystemPowerdown runs system_powerdown, which presses the guest's ACPI power
// button; the guest decides whether and when to shut down.
func (c *Client) SystemPowerdown(ctx context.Context) error {
	return c.Execute(ctx, "system_powerdown", nil, nil)
}

// Close closes the connection.
func (c *Client) Close() error {
	return c.conn.Close()
}

func truncate(m message) string {
	b, _ := json.Marshal(m)
	if len(b) > 200 {
		b = append(b[:200], "..."...)
	}
	return string(b)
}
