package agent

import (
	"context"
	"sync"
	"time"

	runc "github.com/containerd/go-runc"
)

// processState is where a process is in its life.
type processState string

const (
	stateCreated processState = "created" // init after runc create
	stateRunning processState = "running"
	stateStopped processState = "stopped"
)

// process is a container's init process (execID "") or an exec'd process.
type process struct {
	c      *container
	execID string
	io     *procIO

	mu       sync.Mutex
	pid      int
	state    processState
	status   int // exit code, or 128+signal
	exitedAt time.Time
	exited   chan struct{} // closed by setExited
}

func newProcess(c *container, execID string, pio *procIO) *process {
	return &process{c: c, execID: execID, io: pio, state: stateCreated, exited: make(chan struct{})}
}

func (p *process) getPID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

func (p *process) getState() processState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// hasExited reports whether the process's exit was reaped.
func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// setExited records the reaped exit e (its Status is already 128+signal for
// a signalled process) and releases the process's I/O. Later calls are
// ignored.
func (p *process) setExited(e runc.Exit) {
	p.mu.Lock()
	if p.state == stateStopped {
		p.mu.Unlock()
		return
	}
	p.state = stateStopped
	p.status = e.Status
	p.exitedAt = e.Timestamp
	close(p.exited)
	p.mu.Unlock()
	p.io.processExited()
}

// wait blocks until the process exited and all its output reached the
// host's streams (which are then closed), or ctx is done.
func (p *process) wait(ctx context.Context) (status int, exitedAt time.Time, err error) {
	select {
	case <-p.exited:
	case <-ctx.Done():
		return 0, time.Time{}, ctx.Err()
	}
	if err := p.io.wait(ctx); err != nil {
		return 0, time.Time{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status, p.exitedAt, nil
}

// waitTimeout waits like wait but gives up after d; it reports whether the
// process finished.
func (p *process) waitTimeout(d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, _, err := p.wait(ctx)
	return err == nil
}
