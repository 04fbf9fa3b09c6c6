package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
)

// pipeIO is the runc.IO of a process without a terminal: a stdout and a
// stderr pipe always (output nobody attached is drained by the agent), and
// a stdin pipe only when the host attaches stdin (otherwise runc passes
// /dev/null). The child's ends are closed once runc has started.
type pipeIO struct {
	stdinR, stdinW   *os.File
	stdoutR, stdoutW *os.File
	stderrR, stderrW *os.File
}

func newPipeIO(stdin bool) (_ *pipeIO, retErr error) {
	p := &pipeIO{}
	defer func() {
		if retErr != nil {
			p.Close()
		}
	}()
	var err error
	if stdin {
		if p.stdinR, p.stdinW, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("create stdin pipe: %w", err)
		}
	}
	if p.stdoutR, p.stdoutW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("create stdout pipe: %w", err)
	}
	if p.stderrR, p.stderrW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("create stderr pipe: %w", err)
	}
	return p, nil
}

// Stdin implements runc.IO: the agent's (write) end of stdin, or nil.
func (p *pipeIO) Stdin() io.WriteCloser {
	if p.stdinW == nil {
		return nil
	}
	return p.stdinW
}

// Stdout implements runc.IO: the agent's (read) end of stdout.
func (p *pipeIO) Stdout() io.ReadCloser { return p.stdoutR }

// Stderr implements runc.IO: the agent's (read) end of stderr.
func (p *pipeIO) Stderr() io.ReadCloser { return p.stderrR }

// Set implements runc.IO: it gives the child ends to the runc command.
func (p *pipeIO) Set(cmd *exec.Cmd) {
	if p.stdinR != nil {
		cmd.Stdin = p.stdinR
	}
	cmd.Stdout = p.stdoutW
	cmd.Stderr = p.stderrW
}

// CloseAfterStart implements runc.StartCloser: it closes the child ends,
// so that the agent sees EOF on stdout/stderr once the container's
// processes are done with them.
func (p *pipeIO) CloseAfterStart() error {
	return closeFiles(p.stdinR, p.stdoutW, p.stderrW)
}

// Close implements runc.IO: it closes every end.
func (p *pipeIO) Close() error {
	return closeFiles(p.stdinR, p.stdinW, p.stdoutR, p.stdoutW, p.stderrR, p.stderrW)
}

// closeFiles closes the non-nil files, ignoring ones already closed.
func closeFiles(files ...*os.File) error {
	var errs []error
	for _, f := range files {
		if f == nil {
			continue
		}
		if err := f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
