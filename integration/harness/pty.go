package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
)

// PTY is a pseudo-terminal whose slave side is the controlling terminal,
// stdin, stdout and stderr of a child process (such as `ctr run -t`), and
// whose master side the test reads and writes.
type PTY struct {
	master console.Console

	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

// StartWithPTY sets the terminal size to rows x cols, then starts cmd in a
// new session with the PTY's slave as its controlling terminal and as its
// stdin, stdout and stderr. Everything the child writes is collected (see
// Output, WaitFor). The caller must still cmd.Wait() and then Close the
// PTY.
func StartWithPTY(cmd *exec.Cmd, rows, cols uint16) (*PTY, error) {
	master, slavePath, err := console.NewPty()
	if err != nil {
		return nil, fmt.Errorf("allocate pty: %w", err)
	}
	if err := master.Resize(console.WinSize{Height: rows, Width: cols}); err != nil {
		master.Close()
		return nil, fmt.Errorf("set pty size %dx%d: %w", rows, cols, err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, fmt.Errorf("open pty slave %s: %w", slavePath, err)
	}
	defer slave.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setsid = true
	cmd.SysProcAttr.Setctty = true
	cmd.SysProcAttr.Ctty = 0 // the child's fd 0, the slave
	if err := cmd.Start(); err != nil {
		master.Close()
		return nil, fmt.Errorf("start %s on pty: %w", cmd.Path, err)
	}
	p := &PTY{master: master, done: make(chan struct{})}
	go p.collect()
	return p, nil
}

func (p *PTY) collect() {
	defer close(p.done)
	buf := make([]byte, 4096)
	for {
		n, err := p.master.Read(buf)
		if n > 0 {
			p.mu.Lock()
			p.out.Write(buf[:n])
			p.mu.Unlock()
		}
		if err != nil {
			// EIO once the last slave fd is closed: the child is gone.
			return
		}
	}
}

// Write sends keystrokes to the child (as typed on the terminal).
func (p *PTY) Write(b []byte) (int, error) { return p.master.Write(b) }

// Resize sets the terminal size to rows x cols; the kernel sends SIGWINCH
// to the terminal's foreground process group.
func (p *PTY) Resize(rows, cols uint16) error {
	if err := p.master.Resize(console.WinSize{Height: rows, Width: cols}); err != nil {
		return fmt.Errorf("resize pty to %dx%d: %w", rows, cols, err)
	}
	return nil
}

// Output returns everything the child wrote so far (terminal output, so
// lines end in "\r\n").
func (p *PTY) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// WaitFor waits until the output written after byte offset from contains
// s, and returns the offset just past that occurrence. It fails when the
// child's side closes first or timeout passes, quoting the output seen.
func (p *PTY) WaitFor(from int, s string, timeout time.Duration) (int, error) {
	deadline := time.After(timeout)
	for {
		out := p.Output()
		if from > len(out) {
			from = len(out)
		}
		if i := strings.Index(out[from:], s); i >= 0 {
			return from + i + len(s), nil
		}
		select {
		case <-p.done:
			// The collector has stored everything: look once more.
			if out := p.Output(); strings.Contains(out[from:], s) {
				return from + strings.Index(out[from:], s) + len(s), nil
			}
			return 0, fmt.Errorf("wait for %q on pty: terminal closed; output after offset %d: %q", s, from, p.Output()[from:])
		case <-deadline:
			return 0, fmt.Errorf("wait for %q on pty: not seen within %s; output after offset %d: %q", s, timeout, from, out[from:])
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Close closes the master side; the collector stops.
func (p *PTY) Close() error { return p.master.Close() }
