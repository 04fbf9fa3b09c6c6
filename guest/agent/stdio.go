package agent

import (
	"github.com/cofferhq/coffer/guest/policy"

	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/containerd/console"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// ioQuiet is how long a pipe may stay silent after its process exited (or,
// for stdin, after CloseStdin) before the agent stops copying it. Output
// normally ends with EOF as soon as the process exits; ioQuiet only bounds
// the case where a process left behind still holds the pipe open.
const ioQuiet = time.Second

// stdioSpec is the host's agent.StdioSpec.
type stdioSpec struct {
	stdin, stdout, stderr, terminal bool
}

func stdioFrom(s *agent.StdioSpec) stdioSpec {
	return stdioSpec{
		stdin:    s.GetStdin(),
		stdout:   s.GetStdout(),
		stderr:   s.GetStderr(),
		terminal: s.GetTerminal(),
	}
}

// procIO is the stdio plumbing of one process, between its pipes (or pty
// master) and the host's streams.
//
// Without a terminal, stdout and stderr are pipes copied to their streams
// (or to io.Discard when the host attached none) until EOF, and stdin is a
// pipe fed from its stream. With a terminal, the pty master is copied to
// the stdout stream (stderr is merged into it by the tty) and fed from the
// stdin stream; a stderr stream the host opens anyway is closed at once.
// EOF on a terminal's stdin stream (or CloseStdin) stops feeding it but
// leaves the terminal open, so the process gets no hangup.
//
// Lifecycle: newProcIO, then runc create/exec with runcIO or socket, then
// receiveConsole (terminal), start, and eventually processExited and close.
type procIO struct {
	log     *logrus.Entry
	streams *streamRegistry
	key     streamKey // kind filled in per stream
	spec    stdioSpec

	ctx    context.Context // done after close: abandons stream claims
	cancel context.CancelFunc

	pipes  *pipeIO      // no terminal
	socket *runc.Socket // terminal, until receiveConsole

	mu           sync.Mutex // guards master, console, masterClosed
	master       *os.File   // terminal: non-blocking pty master
	console      console.Console
	masterClosed bool

	stdin    *stdinFeed
	readers  []*os.File // output read ends, for deadlines after exit
	outputs  sync.WaitGroup
	done     chan struct{} // closed once every output copy finished
	exited   chan struct{} // closed by processExited
	exitOnce sync.Once
}

func newProcIO(log *logrus.Entry, streams *streamRegistry, containerID, execID string, spec stdioSpec) (*procIO, error) {
	ctx, cancel := context.WithCancel(context.Background())
	pio := &procIO{
		log:     log,
		streams: streams,
		key:     streamKey{containerID: containerID, execID: execID},
		spec:    spec,
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		exited:  make(chan struct{}),
	}
	var err error
	if spec.terminal {
		pio.socket, err = runc.NewTempConsoleSocket()
		if err != nil {
			err = fmt.Errorf("create console socket for runc: %w", err)
		}
	} else {
		pio.pipes, err = newPipeIO(spec.stdin)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return pio, nil
}

// runcIO returns what to hand to runc create/exec: the pipes, or the
// console socket.
func (pio *procIO) runcIO() (runc.IO, runc.ConsoleSocket) {
	if pio.socket != nil {
		return nil, pio.socket
	}
	return pio.pipes, nil
}

// receiveConsole takes the pty master runc sent on the console socket. The
// master is switched to non-blocking mode so that reads honour deadlines;
// console.Resize uses the descriptor through ptyMaster, which never flips
// it back to blocking (os.File.Fd would).
func (pio *procIO) receiveConsole() error {
	if pio.socket == nil {
		return nil
	}
	defer func() {
		pio.socket.Close()
		pio.socket = nil
	}()
	recv, err := pio.socket.ReceiveMaster()
	if err != nil {
		return fmt.Errorf("receive pty master from runc: %w", err)
	}
	fd, err := unix.FcntlInt(recv.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	recv.Close()
	if err != nil {
		return fmt.Errorf("duplicate pty master: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return fmt.Errorf("make pty master non-blocking: %w", err)
	}
	f := os.NewFile(uintptr(fd), "ptmx")
	cons, err := console.ConsoleFromFile(ptyMaster{File: f, fd: uintptr(fd)})
	if err != nil {
		f.Close()
		return fmt.Errorf("open pty master as console: %w", err)
	}
	pio.mu.Lock()
	pio.master, pio.console = f, cons
	pio.mu.Unlock()
	return nil
}

// ptyMaster is a console.File whose Fd does not switch the descriptor to
// blocking mode.
type ptyMaster struct {
	*os.File
	fd uintptr
}

// Fd returns the raw descriptor, leaving its mode alone.
func (m ptyMaster) Fd() uintptr { return m.fd }

// start begins copying. It must run after runc create/exec (and
// receiveConsole) succeeded, and before the process is tracked for exits.
func (pio *procIO) start() {
	kinds := []agent.StreamKind{agent.StreamKind_STREAM_KIND_STDOUT, agent.StreamKind_STREAM_KIND_STDERR}
	if pio.master != nil {
		pio.readers = []*os.File{pio.master}
		pio.outputs.Add(1)
		go pio.copyOutput(kinds[0], pio.master, pio.spec.stdout)
		if pio.spec.stderr {
			go pio.refuseStream(kinds[1], "the process has a terminal, which merges stderr into stdout")
		}
	} else {
		pio.readers = []*os.File{pio.pipes.stdoutR, pio.pipes.stderrR}
		pio.outputs.Add(2)
		go pio.copyOutput(kinds[0], pio.pipes.stdoutR, pio.spec.stdout)
		go pio.copyOutput(kinds[1], pio.pipes.stderrR, pio.spec.stderr)
	}
	go func() {
		pio.outputs.Wait()
		close(pio.done)
	}()

	var w io.WriteCloser
	closeW := true
	switch {
	case pio.master != nil:
		w, closeW = pio.master, false
	case pio.pipes.stdinW != nil:
		w = pio.pipes.stdinW
	}
	if pio.spec.stdin && w != nil {
		pio.stdin = newStdinFeed(pio.ctx, w, closeW)
		go pio.stdin.run(pio.log, func(ctx context.Context) net.Conn {
			return pio.streams.claim(ctx, pio.streamKey(agent.StreamKind_STREAM_KIND_STDIN))
		})
	}
}

func (pio *procIO) streamKey(kind agent.StreamKind) streamKey {
	k := pio.key
	k.kind = kind
	return k
}

// copyOutput copies one output to its stream (or discards it), then closes
// the stream so the host sees EOF. After the process exited it stops once
// the output stays silent for ioQuiet.
func (pio *procIO) copyOutput(kind agent.StreamKind, src *os.File, attach bool) {
	defer pio.outputs.Done()
	k := pio.streamKey(kind)
	var dst io.Writer = io.Discard
	if attach {
		if conn := pio.streams.claim(pio.ctx, k); conn != nil {
			defer conn.Close()
			dst = conn
		}
	}
	buf := make([]byte, 32<<10)
	for {
		select {
		case <-pio.exited:
			src.SetReadDeadline(time.Now().Add(ioQuiet))
		default:
		}
		n, rerr := src.Read(buf)
		if n > 0 && dst != io.Discard {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				pio.log.WithFields(k.fields()).WithError(werr).Warn("write to host stream failed; discarding the rest of this output")
				dst = io.Discard
			}
		}
		if rerr != nil {
			if errors.Is(rerr, os.ErrDeadlineExceeded) {
				pio.log.WithFields(k.fields()).Warnf("output pipe still open %v after the process exited (held by a leftover process?); closing the stream", ioQuiet)
			}
			break
		}
	}
	if src == pio.master {
		pio.closeMaster()
	} else {
		src.Close()
	}
}

// refuseStream closes the stream of kind as soon as the host opens it.
func (pio *procIO) refuseStream(kind agent.StreamKind, why string) {
	if conn := pio.streams.claim(pio.ctx, pio.streamKey(kind)); conn != nil {
		pio.log.WithFields(pio.streamKey(kind).fields()).Infof("closing stream: %s", why)
		conn.Close()
	}
}

func (pio *procIO) closeMaster() {
	pio.mu.Lock()
	defer pio.mu.Unlock()
	if pio.master != nil && !pio.masterClosed {
		pio.masterClosed = true
		pio.master.Close()
	}
}

// processExited switches the output copies to "stop when silent" and ends
// the stdin feed. It is idempotent.
func (pio *procIO) processExited() {
	pio.exitOnce.Do(func() {
		close(pio.exited)
		deadline := time.Now().Add(ioQuiet)
		for _, r := range pio.readers {
			r.SetReadDeadline(deadline) // wakes a blocked Read; errors mean closed
		}
		if pio.stdin != nil {
			pio.stdin.finish()
		}
	})
}

// wait blocks until every output was copied and its stream closed, or ctx
// is done.
func (pio *procIO) wait(ctx context.Context) error {
	select {
	case <-pio.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// closeStdin implements CloseStdin: without an attached stream the pipe
// closes now; with one, the feed ends once the stream has been silent for
// ioQuiet, so bytes the host wrote just before are not lost.
func (pio *procIO) closeStdin() {
	switch {
	case pio.stdin != nil:
		pio.stdin.requestClose()
	case pio.pipes != nil && pio.pipes.stdinW != nil:
		pio.pipes.stdinW.Close()
	}
}

// resize sets the terminal window size (columns, rows).
func (pio *procIO) resize(width, height uint16) error {
	pio.mu.Lock()
	defer pio.mu.Unlock()
	switch {
	case pio.console == nil:
		return fmt.Errorf("process has no terminal: %w", errdefs.ErrFailedPrecondition)
	case pio.masterClosed:
		return fmt.Errorf("terminal is closed (the process exited): %w", errdefs.ErrFailedPrecondition)
	}
	if err := pio.console.Resize(console.WinSize{Width: width, Height: height}); err != nil {
		return fmt.Errorf("set terminal size to %dx%d: %w", width, height, err)
	}
	return nil
}

// close tears everything down at once, abandoning pending stream claims
// and unfinished copies. Callers that want complete output wait first.
func (pio *procIO) close() {
	pio.cancel()
	if pio.stdin != nil {
		pio.stdin.finish()
	}
	if pio.socket != nil {
		pio.socket.Close()
	}
	if pio.pipes != nil {
		pio.pipes.Close()
	}
	pio.closeMaster()
}

// stdinFeed copies the host's stdin stream into the process: a pipe (closed
// at the end, so the process reads EOF) or the pty master (left open).
type stdinFeed struct {
	ctx    context.Context
	cancel context.CancelFunc
	w      io.WriteCloser
	closeW bool

	mu      sync.Mutex
	conn    net.Conn
	closing bool // CloseStdin was called
	done    bool // finish ran
}

func newStdinFeed(parent context.Context, w io.WriteCloser, closeW bool) *stdinFeed {
	ctx, cancel := context.WithCancel(parent)
	return &stdinFeed{ctx: ctx, cancel: cancel, w: w, closeW: closeW}
}

// run waits for the stdin stream and copies it until EOF, an error,
// finish, or silence after requestClose.
func (f *stdinFeed) run(log *logrus.Entry, claim func(context.Context) net.Conn) {
	defer f.finish()
	conn := claim(f.ctx)
	if conn == nil {
		return
	}
	f.mu.Lock()
	if f.done {
		f.mu.Unlock()
		conn.Close()
		return
	}
	f.conn = conn
	if f.closing {
		conn.SetReadDeadline(time.Now().Add(ioQuiet))
	}
	f.mu.Unlock()

	buf := make([]byte, 32<<10)
	for {
		n, rerr := conn.Read(buf)
		if n > 0 {
			if _, werr := f.w.Write(buf[:n]); werr != nil {
				f.mu.Lock()
				done := f.done
				f.mu.Unlock()
				if !done {
					log.WithError(werr).Warn("write to process stdin failed")
				}
				return
			}
		}
		if rerr != nil {
			return
		}
		f.mu.Lock()
		if f.closing {
			conn.SetReadDeadline(time.Now().Add(ioQuiet))
		}
		f.mu.Unlock()
	}
}

// requestClose ends the feed now when no stream is attached, or once the
// attached stream is silent for ioQuiet.
func (f *stdinFeed) requestClose() {
	f.mu.Lock()
	f.closing = true
	conn := f.conn
	if conn != nil && !f.done {
		conn.SetReadDeadline(time.Now().Add(ioQuiet))
	}
	f.mu.Unlock()
	if conn == nil {
		f.finish()
	}
}

// finish ends the feed: it closes the stream and, for a pipe, the write
// end. It is idempotent.
func (f *stdinFeed) finish() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return
	}
	f.done = true
	f.cancel()
	if f.conn != nil {
		f.conn.Close()
	}
	if f.closeW {
		f.w.Close()
	}
}

// policyStdio detaches the streams the agent policy denies: denied output
// is drained and discarded, so the process never blocks on it (Kata#10680),
// and denied stdin reads EOF.
func (a *Agent) policyStdio(containerID, execID string, s stdioSpec) stdioSpec {
	p := a.opts.Policy
	if p == nil {
		return s
	}
	s.stdin = s.stdin && p.AllowStream(containerID, execID, policy.StreamStdin)
	s.stdout = s.stdout && p.AllowStream(containerID, execID, policy.StreamStdout)
	s.stderr = s.stderr && p.AllowStream(containerID, execID, policy.StreamStderr)
	return s
}
