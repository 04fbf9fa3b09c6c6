package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events" // also registers the event types for typeurl
	eventsapi "github.com/containerd/containerd/api/services/events/v1"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	ccevents "github.com/cofferhq/coffer/api/events/v1" // registers the /cc/* event types for typeurl
)

// Task event topics the bench records.
const (
	topicTaskCreate = "/tasks/create"
	topicTaskStart  = "/tasks/start"
)

// taskEvents records when containerd saw each container's task events:
// the envelope timestamp, which the shim stamps when it publishes. It
// also records the first /cc/attestation event of each phase per
// container (key topic + " " + phase), with its duration.
type taskEvents struct {
	mu     sync.Mutex
	times  map[string]map[string]time.Time        // container id -> topic -> time
	attest map[string]map[string]AttestationPhase // container id -> phase -> first event
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// watchTaskEvents subscribes, over containerd's gRPC events API at
// address, to the task create and start events of namespace ns until
// Close.
func watchTaskEvents(address, ns string) (*taskEvents, error) {
	conn, err := grpc.NewClient("unix://"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s for task events: %w", address, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	filters := []string{
		fmt.Sprintf(`namespace==%q,topic==%q`, ns, topicTaskCreate),
		fmt.Sprintf(`namespace==%q,topic==%q`, ns, topicTaskStart),
		fmt.Sprintf(`namespace==%q,topic==%q`, ns, ccevents.TopicAttestation),
	}
	sub, err := eventsapi.NewEventsClient(conn).Subscribe(ctx, &eventsapi.SubscribeRequest{Filters: filters})
	if err != nil {
		cancel()
		conn.Close()
		return nil, fmt.Errorf("subscribe to containerd task events at %s: %w", address, err)
	}
	w := &taskEvents{times: map[string]map[string]time.Time{}, attest: map[string]map[string]AttestationPhase{}, conn: conn, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			env, err := sub.Recv()
			if err != nil {
				if ctx.Err() == nil {
					w.mu.Lock()
					w.err = err
					w.mu.Unlock()
				}
				return
			}
			if env.GetEvent() != nil {
				w.record(env.GetTopic(), env.GetTimestamp().AsTime(), env.GetEvent())
			}
		}
	}()
	return w, nil
}

// record stores the time of a task event for its container.
func (w *taskEvents) record(topic string, at time.Time, event typeurl.Any) {
	v, err := typeurl.UnmarshalAny(event)
	if err != nil {
		return
	}
	var id string
	switch e := v.(type) {
	case *eventstypes.TaskCreate:
		id = e.ContainerID
	case *eventstypes.TaskStart:
		id = e.ContainerID
	case *ccevents.Attestation:
		w.recordAttestation(at, e)
		return
	default:
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.times[id] == nil {
		w.times[id] = map[string]time.Time{}
	}
	w.times[id][topic] = at
}

// get returns when container id's event topic was published.
func (w *taskEvents) get(id, topic string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.times[id][topic]
	return t, ok
}

// failure returns the subscription's error, if it ended early.
func (w *taskEvents) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close ends the subscription and the connection.
func (w *taskEvents) Close() {
	w.cancel()
	<-w.done
	w.conn.Close()
}

// AttestationPhase is the first /cc/attestation event of one phase for a
// container.
type AttestationPhase struct {
	// At is when the shim published it (host clock).
	At time.Time
	// Duration is the event's duration_ns: guest time since the
	// attestation attempt (or resource request) began.
	Duration time.Duration
	// Attempt is the attempt number, from 1.
	Attempt int32
}

// recordAttestation keeps the first event of each phase per container.
func (w *taskEvents) recordAttestation(at time.Time, e *ccevents.Attestation) {
	w.mu.Lock()
	defer w.mu.Unlock()
	id := e.GetContainerId()
	if w.attest[id] == nil {
		w.attest[id] = map[string]AttestationPhase{}
	}
	if _, seen := w.attest[id][e.GetPhase()]; !seen {
		w.attest[id][e.GetPhase()] = AttestationPhase{At: at, Duration: time.Duration(e.GetDurationNs()), Attempt: e.GetAttempt()}
	}
}

// attestation returns the first event of phase for container id.
func (w *taskEvents) attestation(id, phase string) (AttestationPhase, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, ok := w.attest[id][phase]
	return p, ok
}
