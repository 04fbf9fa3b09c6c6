package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/fifo"
	"github.com/containerd/log"

	agent "github.com/cofferhq/coffer/api/agent/v1"
)

// streamDialer opens one raw stream connection to the agent.
type streamDialer func(ctx context.Context) (net.Conn, error)

// processIO joins a process's containerd stdio (FIFOs or files named in the
// task request) to its raw agent streams. The output copies end when the
// agent closes the stream, which it does only after the process's pipe hit
// EOF, so waitOutput returning means every output byte reached containerd.
type processIO struct {
	spec *agent.StdioSpec

	outputs sync.WaitGroup

	mu          sync.Mutex
	stdinStream net.Conn
	stdinDone   chan struct{}
	closers     []io.Closer
}

// stdioPaths are the stdio endpoints containerd gives a process.
type stdioPaths struct {
	Stdin, Stdout, Stderr string
	Terminal              bool
}

// openProcessIO opens containerd's stdio endpoints and one agent stream per
// endpoint, and starts copying. It must run before the agent creates the
// process, so that the agent finds the streams attached; the agent discards
// output the host did not ask for.
func openProcessIO(ctx context.Context, dial streamDialer, containerID, execID string, p stdioPaths) (_ *processIO, retErr error) {
	pio := &processIO{
		spec:      &agent.StdioSpec{Terminal: p.Terminal},
		stdinDone: make(chan struct{}),
	}
	defer func() {
		if retErr != nil {
			pio.Close()
		}
	}()
	open := func(kind agent.StreamKind) (net.Conn, error) {
		c, err := dial(ctx)
		if err != nil {
			return nil, fmt.Errorf("open %s stream to the agent: %w", kindName(kind), err)
		}
		if err := agent.WriteStreamHeader(c, &agent.StreamHeader{ContainerId: containerID, ExecId: execID, Kind: kind}); err != nil {
			c.Close()
			return nil, fmt.Errorf("open %s stream to the agent: %w", kindName(kind), err)
		}
		pio.closers = append(pio.closers, c)
		return c, nil
	}
	outputs := []struct {
		path string
		kind agent.StreamKind
		set  *bool
	}{
		{p.Stdout, agent.StreamKind_STREAM_KIND_STDOUT, &pio.spec.Stdout},
		{p.Stderr, agent.StreamKind_STREAM_KIND_STDERR, &pio.spec.Stderr},
	}
	for _, o := range outputs {
		if o.path == "" || (p.Terminal && o.kind == agent.StreamKind_STREAM_KIND_STDERR) {
			continue
		}
		w, err := openOutput(ctx, o.path)
		if err != nil {
			return nil, err
		}
		pio.closers = append(pio.closers, w)
		c, err := open(o.kind)
		if err != nil {
			return nil, err
		}
		*o.set = true
		pio.outputs.Add(1)
		go func(kind agent.StreamKind) {
			defer pio.outputs.Done()
			if _, err := io.Copy(w, c); err != nil && !errors.Is(err, net.ErrClosed) {
				log.G(ctx).WithError(err).WithField("stream", kindName(kind)).Warn("copy process output")
			}
			w.Close()
			c.Close()
		}(o.kind)
	}
	if p.Stdin == "" {
		close(pio.stdinDone)
		return pio, nil
	}
	r, err := fifo.OpenFifo(context.WithoutCancel(ctx), p.Stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open stdin %s: %w", p.Stdin, err)
	}
	pio.closers = append(pio.closers, r)
	c, err := open(agent.StreamKind_STREAM_KIND_STDIN)
	if err != nil {
		return nil, err
	}
	pio.spec.Stdin = true
	pio.stdinStream = c
	go func() {
		defer close(pio.stdinDone)
		if _, err := io.Copy(c, r); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrClosed) {
			log.G(ctx).WithError(err).Debug("copy stdin")
		}
		closeWrite(c)
	}()
	return pio, nil
}

// openOutput opens a process output endpoint: a FIFO path (ctr, CRI), or
// a file:// URI.
func openOutput(ctx context.Context, p string) (io.WriteCloser, error) {
	u, err := url.Parse(p)
	if err == nil && u.Scheme != "" {
		switch u.Scheme {
		case "file":
			f, err := os.OpenFile(u.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
			if err != nil {
				return nil, fmt.Errorf("open log file %s: %w", u.Path, err)
			}
			return f, nil
		default:
			return nil, fmt.Errorf("stdio URI scheme %q (%s) is not supported by the cc runtime; use a FIFO or file:// URI: %w", u.Scheme, p, errdefs.ErrNotImplemented)
		}
	}
	w, err := fifo.OpenFifo(context.WithoutCancel(ctx), p, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open output %s: %w", p, err)
	}
	return w, nil
}

// closeStdin ends the process's stdin once whatever containerd already
// wrote to the stdin FIFO has been forwarded (bounded by grace).
func (p *processIO) closeStdin(grace time.Duration) {
	select {
	case <-p.stdinDone:
	case <-time.After(grace):
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stdinStream != nil {
		closeWrite(p.stdinStream)
	}
}

// waitOutput waits until every output stream reached EOF, or ctx ends.
func (p *processIO) waitOutput(ctx context.Context) error {
	done := make(chan struct{})
	go func() { p.outputs.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes every endpoint and stream.
func (p *processIO) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.closers {
		c.Close()
	}
	p.closers = nil
}

// closeWrite half-closes c when it supports it, and closes it otherwise.
// A yamux stream's Close is itself a half-close (it sends FIN).
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

func kindName(k agent.StreamKind) string {
	switch k {
	case agent.StreamKind_STREAM_KIND_STDIN:
		return "stdin"
	case agent.StreamKind_STREAM_KIND_STDOUT:
		return "stdout"
	case agent.StreamKind_STREAM_KIND_STDERR:
		return "stderr"
	}
	return k.String()
}
