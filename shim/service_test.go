package shim

import (
	"context"
	"sync"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/stretchr/testify/require"
)

// slowPublisher records published topics, taking a while for each as a
// ttrpc round trip to containerd does.
type slowPublisher struct {
	mu     sync.Mutex
	topics []string
}

func (p *slowPublisher) Publish(ctx context.Context, topic string, ev events.Event) error {
	time.Sleep(20 * time.Millisecond)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.topics = append(p.topics, topic)
	return nil
}

func (p *slowPublisher) Close() error { return nil }

// TestShutdownPublishesQueuedEvents checks that events queued just before
// Shutdown (a /tasks/delete right before containerd's Shutdown call) are
// published before the shutdown service reports done, in order.
func TestShutdownPublishesQueuedEvents(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), "test")
	ctx, sd := shutdown.WithShutdown(ctx)
	pub := &slowPublisher{}
	s := newService(ctx, pub, sd, "")

	want := []string{}
	for i := 0; i < 5; i++ {
		s.send(runtime.TaskExitEventTopic, &eventstypes.TaskExit{ContainerID: "c"})
		want = append(want, runtime.TaskExitEventTopic)
	}
	s.send(runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{ContainerID: "c"})
	want = append(want, runtime.TaskDeleteEventTopic)

	_, err := s.Shutdown(ctx, nil)
	require.NoError(t, err)
	select {
	case <-sd.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not finish")
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	require.Equal(t, want, pub.topics)
}
