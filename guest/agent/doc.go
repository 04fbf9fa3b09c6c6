// Package agent implements cc-agent's side of the Coffer agent API
// (api/agent/v1): the ttrpc Agent service and the raw stdio streams, both
// served on one transport listener inside the confidential VM.
//
// cc-agent's main does the system setup (mounts, switch_root, transport),
// then calls New and Agent.Serve. Serve reads the channel byte of every
// accepted connection (agent.ReadChannel): ChannelRPC connections go to a
// ttrpc server, ChannelStream connections are matched with the stdin,
// stdout or stderr of a container process.
//
// Containers run with runc (github.com/containerd/go-runc) from the OCI spec
// the host sends, in bundles at <StateDir>/containers/<id>. Process exits
// come from containerd's reaper (pkg/sys/reaper): the agent reaps every
// child on SIGCHLD, as containerd-shim-runc-v2 does, and is a child
// subreaper when it is not PID 1 so that container processes are its
// children either way.
//
// # Lock rules
//
// The model is containerd-shim-runc-v2's task/service.go. Locks, in the only
// order in which they may nest:
//
//  1. Agent.mu guards Agent.containers (a nil value reserves an ID while a
//     create or pull is in flight). It is held only for map access, never
//     across a runc call, I/O or a wait.
//  2. container.mu guards container.execs (nil reserves an exec ID) and
//     container.removing, with the same rule.
//  3. Agent.lifecycleMu guards Agent.running (PID to live process) and
//     Agent.exitSubs (exits seen while a create or exec is in flight).
//     processExits takes it once per reaped exit.
//  4. process.mu guards a process's PID, state and exit status. It is a leaf.
//
// streamRegistry.mu, procIO.mu and stdinFeed.mu are leaves too: nothing
// else is locked while they are held. process.mu is held across kill(2) in
// SignalProcess so that a reaped (and possibly reused) PID is never
// signalled.
//
// A process is only in Agent.running once its PID is known. Exits that
// happen between "runc create/exec started" and "PID recorded" are caught
// by an exit subscription (Agent.watchExits) taken before runc runs; the
// caller must then call track (or release) exactly once. See watchExits.
package agent
