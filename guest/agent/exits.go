package agent

import (
	"context"
	"os"
	"os/signal"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// exitSub collects the exits reaped while a runc create or exec is in
// flight, so that a process exiting before its PID is known is not missed.
type exitSub struct {
	exits map[int]runc.Exit
}

// watchExits starts collecting exits. The caller must then call track
// (once the process's PID is known and its I/O started) or release, exactly
// once. lifecycleMu must not be held.
func (a *Agent) watchExits() *exitSub {
	s := &exitSub{exits: make(map[int]runc.Exit)}
	a.lifecycleMu.Lock()
	a.exitSubs[s] = struct{}{}
	a.lifecycleMu.Unlock()
	return s
}

// release ends an exit subscription whose process was never started.
func (a *Agent) release(s *exitSub) {
	a.lifecycleMu.Lock()
	delete(a.exitSubs, s)
	a.lifecycleMu.Unlock()
}

// track ends the subscription s and hands p (with its PID set) to exit
// handling: an exit already seen is handled now, otherwise p waits in
// Agent.running for processExits. lifecycleMu must not be held.
func (a *Agent) track(s *exitSub, p *process) {
	pid := p.getPID()
	a.lifecycleMu.Lock()
	delete(a.exitSubs, s)
	e, exited := s.exits[pid]
	if !exited {
		a.running[pid] = p
	}
	a.lifecycleMu.Unlock()
	if exited {
		a.handleExit(p, e)
	}
}

// processExits handles every exit the reaper reports until ec is closed.
func (a *Agent) processExits(ec chan runc.Exit) {
	for e := range ec {
		a.lifecycleMu.Lock()
		for s := range a.exitSubs {
			s.exits[e.Pid] = e
		}
		p := a.running[e.Pid]
		delete(a.running, e.Pid)
		a.lifecycleMu.Unlock()
		if p != nil {
			a.handleExit(p, e)
		}
	}
}

// handleExit records p's exit. When a container's init exits and the
// container shares the guest's PID namespace, its other processes are not
// killed by the kernel, so the agent kills them (as containerd's runc shim
// does).
func (a *Agent) handleExit(p *process, e runc.Exit) {
	p.setExited(e)
	a.log.WithField("container_id", p.c.id).WithField("exec_id", p.execID).
		WithField("pid", e.Pid).WithField("exit_status", e.Status).Info("process exited")
	if p.execID == "" && !p.c.pidNS {
		go func() {
			if err := a.killAll(context.Background(), p.c, unix.SIGKILL); err != nil {
				a.log.WithField("container_id", p.c.id).WithError(err).Warn("kill processes left after init exited")
			}
		}()
	}
}

// reapLoop calls reaper.Reap on every SIGCHLD until ctx is done. It reaps
// once first, for children that exited before it started.
func (a *Agent) reapLoop(ctx context.Context, started chan<- struct{}) {
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, unix.SIGCHLD)
	defer signal.Stop(sigs)
	close(started)
	if err := reaper.Reap(); err != nil {
		a.log.WithError(err).Warn("reap children")
	}
	for {
		select {
		case <-sigs:
			if err := reaper.Reap(); err != nil {
				a.log.WithError(err).Warn("reap children")
			}
		case <-ctx.Done():
			return
		}
	}
}
