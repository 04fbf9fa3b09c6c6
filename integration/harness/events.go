package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// eventsSyncTimeout bounds how long WatchEvents waits until the
	// subscription is seen to deliver events.
	eventsSyncTimeout = 30 * time.Second
	// eventsSyncRetry is how long WatchEvents waits for one sync event
	// before publishing the next.
	eventsSyncRetry = 500 * time.Millisecond
	// eventsSyncLabel is the namespace label WatchEvents sets to publish a
	// /namespaces/update event of its own.
	eventsSyncLabel = "coffer.test/events-sync"
	// eventsStopTimeout bounds how long Stop waits for `ctr events` to exit.
	eventsStopTimeout = 10 * time.Second
)

// Event is one event printed by `ctr events`: a line
// "<timestamp> <namespace> <topic> <JSON payload>", where the timestamp is
// Go's time.Time String form (which holds spaces) and the payload is the
// event's protobuf message (containerd/api/events) as encoding/json
// renders it, e.g. {"container_id":"c1","id":"c1","pid":12,"exit_status":137,...}.
type Event struct {
	// Namespace is the containerd namespace the event was published in.
	Namespace string
	// Topic is the event topic, e.g. "/tasks/exit".
	Topic string
	// Payload holds the commonly used payload fields; absent fields are zero.
	Payload EventPayload
	// JSON is the raw payload, "" for events ctr printed without one.
	JSON string
	// Line is the whole line as ctr printed it.
	Line string
}

// EventPayload is the union of the payload fields tests look at, with the
// JSON names of containerd's api/events messages (TaskCreate, TaskStart,
// TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskDelete,
// ImageCreate, NamespaceUpdate, ...).
type EventPayload struct {
	// ContainerID is the container of a /tasks/* event.
	ContainerID string `json:"container_id"`
	// ID is the process of a /tasks/exit event: the exec ID, or the
	// container ID for the init process.
	ID string `json:"id"`
	// ExecID is the exec process of /tasks/exec-added and
	// /tasks/exec-started.
	ExecID string `json:"exec_id"`
	// Pid is the process ID (in the guest, for Coffer) of create, start,
	// exec-started, exit and delete events.
	Pid uint32 `json:"pid"`
	// ExitStatus is the exit status of /tasks/exit and /tasks/delete.
	ExitStatus uint32 `json:"exit_status"`
	// Name is the image of /images/* or the namespace of /namespaces/*.
	Name string `json:"name"`
	// Labels are the labels of /namespaces/* and /images/* events.
	Labels map[string]string `json:"labels"`
	// Phase, TEE, Measurement, KBSURL and Reason are the fields of
	// Coffer's /cc/attestation events (api/events/v1 Attestation).
	Phase       string `json:"phase"`
	TEE         string `json:"tee"`
	Measurement string `json:"measurement"`
	KBSURL      string `json:"kbs_url"`
	Reason      string `json:"reason"`
	Resource    string `json:"resource"`
	Attempt     int    `json:"attempt"`
}

// String renders the event as "<topic> <payload JSON>" for test messages.
func (e Event) String() string { return e.Topic + " " + e.JSON }

// ParseEventLine parses one line of `ctr events` output (see Event). The
// topic is the first field starting with "/" that follows at least one
// other field; the field before it is the namespace and the rest of the
// line is the JSON payload. It returns an error for lines without a topic
// or with a payload that is not a JSON object.
func ParseEventLine(line string) (Event, error) {
	line = strings.TrimRight(line, "\r\n")
	fields := strings.Fields(line)
	for i := 1; i < len(fields); i++ {
		if !strings.HasPrefix(fields[i], "/") {
			continue
		}
		e := Event{Namespace: fields[i-1], Topic: fields[i], Line: line}
		// The payload is everything after the topic, spaces inside JSON
		// strings included.
		_, rest, _ := strings.Cut(line, " "+fields[i-1]+" "+fields[i])
		e.JSON = strings.TrimSpace(rest)
		if e.JSON != "" {
			if err := json.Unmarshal([]byte(e.JSON), &e.Payload); err != nil {
				return Event{}, fmt.Errorf("parse `ctr events` line %q: payload is not a JSON object: %w", line, err)
			}
		}
		return e, nil
	}
	return Event{}, fmt.Errorf("parse `ctr events` line %q: no \"/topic\" field after the timestamp and namespace", line)
}

// EventWatcher is a running `ctr events namespace==<ns>` that collects
// every event of one containerd namespace, in the order containerd
// delivered them. Start one with Containerd.WatchEvents.
type EventWatcher struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	exited chan struct{}

	mu       sync.Mutex
	events   []Event
	bad      []string // lines that did not parse
	stderr   bytes.Buffer
	changed  chan struct{} // closed and replaced on every new event
	stopOnce sync.Once
}

// WatchEvents starts `ctr events namespace==<Namespace()>` bound to ctx and
// returns once the subscription is known to deliver: it sets the
// namespace label coffer.test/events-sync (`ctr namespaces label`, which
// also creates the namespace if needed) to fresh values until the
// matching /namespaces/update event arrives, for at most 30 s, and fails
// the test (t.Fatal) otherwise. Events published before WatchEvents
// returned may or may not have been collected; everything published after
// is.
//
// t.Cleanup stops the watcher (see Stop) and, when the test failed, logs
// every event it collected.
func (c *Containerd) WatchEvents(ctx context.Context, t testing.TB) *EventWatcher {
	t.Helper()
	wctx, cancel := context.WithCancel(ctx)
	ccctl, err := binary("ccctl")
	if err != nil {
		cancel()
		t.Fatalf("watch events: %v", err)
	}
	// `ccctl events` prints ctr's line format and also decodes Coffer's
	// /cc/* events, which `ctr events` drops.
	cmd := exec.CommandContext(wctx, ccctl, "events", "--address", c.address, "namespace=="+c.namespace)
	cmd.WaitDelay = 5 * time.Second
	w := &EventWatcher{
		cmd:     cmd,
		cancel:  cancel,
		exited:  make(chan struct{}),
		changed: make(chan struct{}),
	}
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatalf("watch events: %v", err)
	}
	w.cmd.Stderr = &lockedWriter{mu: &w.mu, w: &w.stderr}
	if err := w.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("watch events: start `ccctl events`: %v", err)
	}
	go w.read(stdout)
	t.Cleanup(func() {
		w.Stop()
		if t.Failed() {
			t.Logf("events collected by `ctr events namespace==%s`:\n%s", c.namespace, w.dump())
		}
	})
	if err := w.sync(ctx, c); err != nil {
		t.Fatalf("watch events: %v", err)
	}
	return w
}

// read collects events from ctr's stdout until it closes.
func (w *EventWatcher) read(r io.Reader) {
	defer close(w.exited)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		e, err := ParseEventLine(line)
		w.mu.Lock()
		if err != nil {
			w.bad = append(w.bad, err.Error())
		} else {
			w.events = append(w.events, e)
		}
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
	}
	_ = w.cmd.Wait()
}

// sync publishes /namespaces/update events until one arrives.
func (w *EventWatcher) sync(ctx context.Context, c *Containerd) error {
	deadline := time.Now().Add(eventsSyncTimeout)
	for i := 1; time.Now().Before(deadline); i++ {
		value := strconv.Itoa(i)
		if _, err := c.Ctr(ctx, "namespaces", "label", c.namespace, eventsSyncLabel+"="+value); err != nil {
			return fmt.Errorf("publish a sync event: %w", err)
		}
		_, err := w.WaitFor(ctx, eventsSyncRetry, func(e Event) bool {
			return e.Topic == "/namespaces/update" && e.Payload.Labels[eventsSyncLabel] == value
		})
		if err == nil {
			return nil
		}
		select {
		case <-w.exited:
			return fmt.Errorf("`ctr events` exited before delivering any event; stderr: %s", w.Stderr())
		default:
		}
	}
	return fmt.Errorf("`ctr events` delivered no /namespaces/update event within %s; stderr: %s", eventsSyncTimeout, w.Stderr())
}

// Events returns a copy of the events collected so far, oldest first.
func (w *EventWatcher) Events() []Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Event(nil), w.events...)
}

// Stderr returns what `ctr events` printed on stderr so far.
func (w *EventWatcher) Stderr() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stderr.String()
}

// WaitFor returns the first collected event (oldest first, including those
// collected before the call) for which match is true, waiting up to
// timeout for it to arrive. It returns an error naming the timeout and
// the topics seen when none matched in time, when ctx is done, or when
// `ctr events` exited.
func (w *EventWatcher) WaitFor(ctx context.Context, timeout time.Duration, match func(Event) bool) (Event, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		w.mu.Lock()
		for _, e := range w.events {
			if match(e) {
				w.mu.Unlock()
				return e, nil
			}
		}
		changed := w.changed
		n := len(w.events)
		w.mu.Unlock()
		select {
		case <-changed:
		case <-timer.C:
			return Event{}, fmt.Errorf("no matching event within %s among the %d collected: %s", timeout, n, w.dump())
		case <-ctx.Done():
			return Event{}, fmt.Errorf("wait for event: %w", ctx.Err())
		case <-w.exited:
			// Check once more: the last lines may have been read just now.
			w.mu.Lock()
			for _, e := range w.events {
				if match(e) {
					w.mu.Unlock()
					return e, nil
				}
			}
			w.mu.Unlock()
			return Event{}, fmt.Errorf("`ctr events` exited (stderr: %s) before a matching event among: %s", w.Stderr(), w.dump())
		}
	}
}

// Stop kills `ctr events` and waits (at most 10 s) for its output to be
// read. It is idempotent and also runs at t.Cleanup; Events keeps working
// afterwards.
func (w *EventWatcher) Stop() {
	w.stopOnce.Do(func() {
		w.cancel()
		select {
		case <-w.exited:
		case <-time.After(eventsStopTimeout):
		}
	})
}

// dump renders every collected event, one per line, plus unparsable lines.
func (w *EventWatcher) dump() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for _, e := range w.events {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	for _, l := range w.bad {
		fmt.Fprintf(&b, "  unparsable: %s\n", l)
	}
	if b.Len() == 0 {
		return "(none)"
	}
	return b.String()
}

// lockedWriter serialises writes to w under mu.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
