package integration

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/integration/harness"
)

// eventWait bounds how long a test waits for an event the shim must
// already have published (it publishes before or right after the RPC that
// caused it returned).
const eventWait = 30 * time.Second

// taskEventsOf returns the /tasks/* events of container id, in the order
// containerd delivered them.
func taskEventsOf(events []harness.Event, id string) []harness.Event {
	var out []harness.Event
	for _, ev := range events {
		if strings.HasPrefix(ev.Topic, "/tasks/") && ev.Payload.ContainerID == id {
			out = append(out, ev)
		}
	}
	return out
}

// topics returns the topics of events.
func topics(events []harness.Event) []string {
	out := make([]string, len(events))
	for i, ev := range events {
		out[i] = ev.Topic
	}
	return out
}

// TestTaskEventsInOrder follows one container through its life (run -d,
// exec a process that exits 7, SIGKILL the init, delete) and checks that
// the shim published exactly the task events containerd's runc shim would,
// in order, with the PIDs and exit statuses that belong to them.
func TestTaskEventsInOrder(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	ref := e.busybox()
	w := e.ctd.WatchEvents(e.ctx, t)
	id := newID("events")
	e.startDetached(ref, id, "sleep", "1000")

	_, err := e.ctd.Ctr(e.ctx, "task", "exec", "--exec-id", "x1", id, "sh", "-c", "exit 7")
	require.Equal(t, 7, exitCode(t, err))
	// `ctr task exec` returned after the exec's exit, so the shim queued
	// its /tasks/exit before the init's below.
	_, err = e.ctd.Ctr(e.ctx, "task", "kill", "-s", "SIGKILL", id)
	require.NoError(t, err)
	e.waitTaskStatus(id, "STOPPED")
	_, err = e.ctd.Ctr(e.ctx, "task", "rm", id)
	require.NoError(t, err)
	_, err = e.ctd.Ctr(e.ctx, "container", "rm", id)
	require.NoError(t, err)

	_, err = w.WaitFor(e.ctx, eventWait, func(ev harness.Event) bool {
		return ev.Topic == "/tasks/delete" && ev.Payload.ContainerID == id
	})
	require.NoError(t, err, "no /tasks/delete for %s", id)
	// /containers/delete comes from containerd after `ctr container rm`,
	// later than every task event: once it is in, none can be missing.
	_, err = w.WaitFor(e.ctx, eventWait, func(ev harness.Event) bool {
		return ev.Topic == "/containers/delete"
	})
	require.NoError(t, err)

	evs := taskEventsOf(w.Events(), id)
	for _, ev := range evs {
		t.Logf("event: %s", ev)
	}
	require.Equal(t, []string{
		"/tasks/create", "/tasks/start",
		"/tasks/exec-added", "/tasks/exec-started", "/tasks/exit",
		"/tasks/exit", "/tasks/delete",
	}, topics(evs), "task events of %s, in order: %v", id, evs)
	create, start, added, started, execExit, initExit, del := evs[0], evs[1], evs[2], evs[3], evs[4], evs[5], evs[6]

	initPID := create.Payload.Pid
	require.NotZero(t, initPID, "/tasks/create must carry the init's guest PID: %s", create)
	require.Equal(t, initPID, start.Payload.Pid, "/tasks/start must carry the PID /tasks/create announced: %s", start)

	require.Equal(t, "x1", added.Payload.ExecID, "%s", added)
	require.Equal(t, "x1", started.Payload.ExecID, "%s", started)
	execPID := started.Payload.Pid
	require.NotZero(t, execPID, "/tasks/exec-started must carry the exec's guest PID: %s", started)
	require.NotEqual(t, initPID, execPID, "exec and init must be different processes")

	require.Equal(t, "x1", execExit.Payload.ID, "the first exit is the exec's: %s", execExit)
	require.Equal(t, execPID, execExit.Payload.Pid, "%s", execExit)
	require.EqualValues(t, 7, execExit.Payload.ExitStatus, "%s", execExit)

	require.Equal(t, id, initExit.Payload.ID, "the second exit is the init's: %s", initExit)
	require.Equal(t, initPID, initExit.Payload.Pid, "%s", initExit)
	require.EqualValues(t, 137, initExit.Payload.ExitStatus, "SIGKILL gives 128+9: %s", initExit)

	require.Equal(t, initPID, del.Payload.Pid, "%s", del)
	require.EqualValues(t, 137, del.Payload.ExitStatus, "%s", del)
}

// oomLimit is the container memory limit of TestOOMKillPublishesEvent,
// 32 MiB (cgroup v2 memory.max in the guest); the default 512 MiB VM has
// ample room beyond it, so only the container's cgroup runs out.
const oomLimit = 32 << 20

// TestOOMKillPublishesEvent: dd with a 64 MiB block buffer (filled from
// /dev/zero, so every page is touched) exceeds its container's 32 MiB
// memory limit; the guest kernel's OOM killer kills it, `ctr run` exits
// 137, and the shim publishes /tasks/oom for the container (what CRI turns
// into the OOMKilled reason).
func TestOOMKillPublishesEvent(t *testing.T) {
	e := newEnv(t, shortTest, defaultShimConfig)
	ref := e.busybox()
	w := e.ctd.WatchEvents(e.ctx, t)
	id := newID("oom")

	_, err := e.run([]string{"--rm", "--memory-limit", strconv.Itoa(oomLimit)}, ref, id,
		"dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
	require.Equal(t, 137, exitCode(t, err), "the OOM-killed dd must exit with 128+SIGKILL; error: %v", err)
	require.NotContains(t, stderrOf(t, err), "records out", "dd finished: the memory limit was not enforced")

	oom, err := w.WaitFor(e.ctx, eventWait, func(ev harness.Event) bool {
		return ev.Topic == "/tasks/oom" && ev.Payload.ContainerID == id
	})
	require.NoError(t, err, "no /tasks/oom event for %s", id)
	t.Logf("OOM event: %s", oom)
	exit, err := w.WaitFor(e.ctx, eventWait, func(ev harness.Event) bool {
		return ev.Topic == "/tasks/exit" && ev.Payload.ContainerID == id && ev.Payload.ID == id
	})
	require.NoError(t, err, "no /tasks/exit event for the init of %s", id)
	require.EqualValues(t, 137, exit.Payload.ExitStatus, "%s", exit)
}
