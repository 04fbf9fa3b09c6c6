package agent

import (
	"context"
	"net"
	"sync"
	"time"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/sirupsen/logrus"
)

// maxParkedStreams bounds the streams waiting for their process, so a
// hostile host cannot make the agent hold an unbounded number of
// connections.
const maxParkedStreams = 256

// streamKey names one stdio pipe of one process.
type streamKey struct {
	containerID string
	execID      string
	kind        agent.StreamKind
}

func (k streamKey) fields() logrus.Fields {
	return logrus.Fields{"container_id": k.containerID, "exec_id": k.execID, "stream": k.kind.String()}
}

// parkedStream is a stream that arrived before its process claimed it.
type parkedStream struct {
	conn  net.Conn
	timer *time.Timer
}

// streamRegistry is the rendezvous between stream connections and the
// processes that use them. The host normally opens a process's streams
// before CreateContainer or ExecProcess, but either order works: a stream
// that arrives first is parked until claimed (closed if nobody claims it
// within timeout), and a claim that comes first waits for the stream.
type streamRegistry struct {
	log     *logrus.Entry
	timeout time.Duration

	mu      sync.Mutex
	parked  map[streamKey]*parkedStream
	waiting map[streamKey]chan net.Conn
	closed  bool
}

func newStreamRegistry(log *logrus.Entry, timeout time.Duration) *streamRegistry {
	return &streamRegistry{
		log:     log,
		timeout: timeout,
		parked:  make(map[streamKey]*parkedStream),
		waiting: make(map[streamKey]chan net.Conn),
	}
}

// offer hands a newly opened stream to the process waiting for it, or
// parks it. It closes c when it is a duplicate of a parked stream, when
// too many streams are parked, or when the registry is closed.
func (r *streamRegistry) offer(k streamKey, c net.Conn) {
	r.mu.Lock()
	if ch, ok := r.waiting[k]; ok {
		delete(r.waiting, k)
		ch <- c // buffered, never blocks
		r.mu.Unlock()
		return
	}
	var reason string
	switch {
	case r.closed:
		reason = "agent is shutting down"
	case r.parked[k] != nil:
		reason = "a stream for this process pipe is already waiting"
	case len(r.parked) >= maxParkedStreams:
		reason = "too many streams wait for their process"
	}
	if reason != "" {
		r.mu.Unlock()
		r.log.WithFields(k.fields()).Warnf("refusing stream: %s", reason)
		c.Close()
		return
	}
	ps := &parkedStream{conn: c}
	ps.timer = time.AfterFunc(r.timeout, func() {
		r.mu.Lock()
		if r.parked[k] != ps {
			r.mu.Unlock()
			return
		}
		delete(r.parked, k)
		r.mu.Unlock()
		r.log.WithFields(k.fields()).Warnf("closing stream: no process claimed it within %v", r.timeout)
		c.Close()
	})
	r.parked[k] = ps
	r.mu.Unlock()
}

// claim returns the stream for k, waiting up to the registry timeout for
// it to arrive. It returns nil when the stream does not arrive in time,
// when ctx is done or when another claim for k is already waiting.
func (r *streamRegistry) claim(ctx context.Context, k streamKey) net.Conn {
	r.mu.Lock()
	if ps, ok := r.parked[k]; ok {
		delete(r.parked, k)
		ps.timer.Stop()
		r.mu.Unlock()
		return ps.conn
	}
	if _, dup := r.waiting[k]; dup || r.closed {
		r.mu.Unlock()
		return nil
	}
	ch := make(chan net.Conn, 1)
	r.waiting[k] = ch
	r.mu.Unlock()

	t := time.NewTimer(r.timeout)
	defer t.Stop()
	select {
	case c := <-ch:
		return c
	case <-t.C:
		r.log.WithFields(k.fields()).Warnf("host opened no stream within %v; the process sees this pipe as unattached", r.timeout)
	case <-ctx.Done():
	}
	r.mu.Lock()
	if r.waiting[k] == ch {
		delete(r.waiting, k)
	}
	r.mu.Unlock()
	select {
	case c := <-ch: // offered between the timeout and the delete
		if ctx.Err() == nil {
			return c
		}
		c.Close()
	default:
	}
	return nil
}

// close closes every parked stream and refuses new ones.
func (r *streamRegistry) close() {
	r.mu.Lock()
	r.closed = true
	parked := r.parked
	r.parked = make(map[streamKey]*parkedStream)
	r.mu.Unlock()
	for _, ps := range parked {
		ps.timer.Stop()
		ps.conn.Close()
	}
}
