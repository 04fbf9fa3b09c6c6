package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cofferhq/coffer/integration/harness"
)

// Shim log messages the bench reads (shim/sandbox.go).
const (
	msgBooted  = "VM booted and cc-agent answered"
	msgPulled  = "image pulled in the guest"
	msgStopped = "stopping the VM"
)

// runtimeType is the containerd runtime name of the Coffer shim.
const runtimeType = "io.containerd.cc.v2"

// readyLine is the container's first output line.
const readyLine = "coffer-bench-ready"

// containerCommand prints readyLine, then keeps the container running for
// a second so that memory is sampled while it runs.
var containerCommand = []string{"sh", "-c", "echo " + readyLine + "; sleep 1"}

const (
	// pollInterval is how often the console log and /proc are polled.
	pollInterval = 20 * time.Millisecond
	// memoryEvery samples memory every memoryEvery polls (100 ms).
	memoryEvery = 5
	// stopLogWait bounds the wait for the shim's "stopping the VM" line
	// after ctr returned (shim logs reach containerd's log asynchronously).
	stopLogWait = 10 * time.Second
)

// RunSample is one `ctr run` of the busybox image. Times are offsets from
// the moment ctr was started.
type RunSample struct {
	// ID is the container id.
	ID string
	// FirstOutput is when ctr printed the container's first line.
	FirstOutput time.Duration
	// QEMULaunched is when the shim started QEMU: the shim's log time of
	// msgBooted minus its agent_ready field.
	QEMULaunched time.Duration
	// AgentAnswered is when the agent answered the shim's first Health
	// call (log time of msgBooted).
	AgentAnswered time.Duration
	// PullDone is the log time of msgPulled.
	PullDone time.Duration
	// TaskCreated and TaskStarted are the /tasks/create and /tasks/start
	// event times (the shim stamps them when it publishes); zero if the
	// event was not seen.
	TaskCreated, TaskStarted time.Duration
	// VMStart is the shim's vm_start field: QEMU exec until QMP answered.
	VMStart time.Duration
	// PullRPC is the shim's duration field of msgPulled: the PullImage RPC.
	PullRPC time.Duration
	// PullBytes is the bytes the guest fetched.
	PullBytes uint64
	// Console maps console markers (Mark*) to when they first appeared.
	Console map[string]time.Duration
	// Timeline is every console line with the time the host saw it.
	Timeline []ConsoleLine
	// Shim and QEMU are the processes' memory at the last sample before
	// they exited (Peak is VmHWM, so it covers the whole run).
	Shim, QEMU Memory
	// AgentPeak is cc-agent's VmHWM in bytes, from the shim's msgStopped
	// line (agent_peak_rss_bytes).
	AgentPeak uint64
	// CtrExited is when `ctr run --rm` returned (after the container's
	// sleep, the task delete and the VM stop).
	CtrExited time.Duration
	// AgentRSS is cc-agent's VmRSS in bytes when the shim stopped the VM
	// (agent_rss_bytes of msgStopped): the agent with its policy loaded,
	// after the run.
	AgentRSS uint64
	// Allowed is when the shim published the /cc/attestation "allowed"
	// event, as an offset from ctr's start; zero when the run did not
	// attest. AllowedAttempt is that event's duration_ns: guest time from
	// the start of the successful attestation attempt (auth, evidence,
	// attest) to the KBS's token.
	Allowed, AllowedAttempt time.Duration
}

// vmStateDir mirrors shim/sandbox.go sandboxStateDir: the shim's VM state
// directory for container id (its own sandbox) in namespace ns is
// /run/cc/<first 8 bytes of sha256("<ns>/<id>"), hex>.
func vmStateDir(ns, id string) string {
	sum := sha256.Sum256([]byte(ns + "/" + id))
	return filepath.Join("/run/cc", hex.EncodeToString(sum[:8]))
}

// runContainer runs containerCommand in a new container id with `ctr run
// --rm` and measures it (see RunSample).
func (b *Bench) runContainer(ctx context.Context, id string) (*RunSample, error) {
	c := b.cfg
	offset, err := FileSize(c.ContainerdLog)
	if err != nil {
		return nil, err
	}
	args := []string{"--address", c.Address, "--namespace", c.Namespace,
		"run", "--rm", "--snapshotter", "cc", "--runtime", runtimeType, "--runtime-config-path", c.ShimConfig,
		"--fifo-dir", c.FIFODir}
	args = append(append(args, c.RunArgs...), c.Image, id)
	cmd := exec.CommandContext(ctx, c.Ctr, append(args, containerCommand...)...)
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("pipe ctr stdout: %w", err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr

	start := time.Now()
	console := newConsoleWatch(filepath.Join(vmStateDir(c.Namespace, id), "console.log"), start,
		MarkFirmware, MarkKernel, MarkAgentStart, MarkAgentListen)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start ctr run: %w", err)
	}
	type line struct {
		text string
		at   time.Duration
	}
	first := make(chan line, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			if !sent {
				first <- line{sc.Text(), time.Since(start)}
				sent = true
			}
		}
	}()
	exited := make(chan error, 1)
	go func() {
		// Wait closes the pipe: read it to the end first.
		<-readDone
		exited <- cmd.Wait()
	}()

	s := &RunSample{ID: id}
	var firstLine *line
	var shimPID, qemuPID int
	var waitErr error
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for tick := 0; ; tick++ {
		console.poll(time.Now())
		if shimPID == 0 || qemuPID == 0 {
			shimPID, qemuPID = b.findShimAndQEMU(id, shimPID, console)
		}
		if tick%memoryEvery == 0 {
			sampleMemory(shimPID, &s.Shim)
			sampleMemory(qemuPID, &s.QEMU)
		}
		if firstLine == nil {
			select {
			case l := <-first:
				firstLine = &l
			default:
			}
		}
		select {
		case waitErr = <-exited:
		case <-ticker.C:
			continue
		}
		break
	}
	s.CtrExited = time.Since(start)
	if firstLine == nil {
		select {
		case l := <-first:
			firstLine = &l
		default:
		}
	}
	if waitErr != nil {
		return nil, fmt.Errorf("ctr run %s: %w; stderr: %s", id, waitErr, strings.TrimSpace(stderr.String()))
	}
	if firstLine == nil || firstLine.text != readyLine {
		got := "no output"
		if firstLine != nil {
			got = fmt.Sprintf("%q", firstLine.text)
		}
		return nil, fmt.Errorf("ctr run %s: first output line is %s, want %q; stderr: %s", id, got, readyLine, strings.TrimSpace(stderr.String()))
	}
	s.FirstOutput = firstLine.at
	s.Console = console.milestones()
	s.Timeline = console.timeline()
	if err := b.readShimLog(ctx, s, offset, start); err != nil {
		return nil, err
	}
	if t, ok := b.events.get(id, topicTaskCreate); ok {
		s.TaskCreated = t.Sub(start)
	}
	if t, ok := b.events.get(id, topicTaskStart); ok {
		s.TaskStarted = t.Sub(start)
	}
	if a, ok := b.events.attestation(id, phaseAllowed); ok {
		s.Allowed, s.AllowedAttempt = a.At.Sub(start), a.Duration
	}
	return s, nil
}

// sampleMemory stores pid's memory in m if pid is known and alive, so m
// keeps the last sample taken before the process exited.
func sampleMemory(pid int, m *Memory) {
	if pid == 0 {
		return
	}
	if got, err := ReadMemory(pid); err == nil {
		*m = got
	}
}

// findShimAndQEMU looks for the long-running shim serving id and its QEMU
// child, keeping what was already found, and points the console watch at
// the console log named on QEMU's command line.
func (b *Bench) findShimAndQEMU(id string, shimPID int, console *consoleWatch) (int, int) {
	procs, err := harness.ListProcs()
	if err != nil {
		return shimPID, 0
	}
	if shimPID == 0 {
		for _, p := range procs {
			if isShimFor(p.Cmdline, id, b.cfg.Address) {
				shimPID = p.PID
				break
			}
		}
		if shimPID == 0 {
			return 0, 0
		}
	}
	for _, p := range procs {
		if p.PPID == shimPID && isQEMU(p.Cmdline) {
			console.setPath(qemuConsolePath(p.Cmdline))
			return shimPID, p.PID
		}
	}
	return shimPID, 0
}

// readShimLog fills the fields that come from the shim's log lines for
// s.ID, written after byte offset of containerd's log. It waits up to
// stopLogWait for msgStopped.
func (b *Bench) readShimLog(ctx context.Context, s *RunSample, offset int64, start time.Time) error {
	var booted, pulled, stopped *LogLine
	deadline := time.Now().Add(stopLogWait)
	for {
		lines, next, err := ReadLogLines(b.cfg.ContainerdLog, offset)
		if err != nil {
			return err
		}
		offset = next
		for i := range lines {
			l := &lines[i]
			switch {
			case l.Msg == msgBooted && l.Fields["sandbox"] == s.ID && booted == nil:
				booted = l
			case l.Msg == msgPulled && booted != nil && pulled == nil:
				pulled = l
			case l.Msg == msgStopped && l.Fields["sandbox"] == s.ID && stopped == nil:
				stopped = l
			}
		}
		if stopped != nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if booted == nil || pulled == nil {
		return fmt.Errorf("containerd log %s has no shim lines %q (sandbox=%s) and %q after the run: is containerd's debug level info or lower, and is the shim the current build?", b.cfg.ContainerdLog, msgBooted, s.ID, msgPulled)
	}
	ready, err := booted.Duration("agent_ready")
	if err != nil {
		return err
	}
	if s.VMStart, err = booted.Duration("vm_start"); err != nil {
		return err
	}
	if s.PullRPC, err = pulled.Duration("duration"); err != nil {
		return err
	}
	if s.PullBytes, err = pulled.Uint("bytes"); err != nil {
		return err
	}
	s.AgentAnswered = booted.Time.Sub(start)
	s.QEMULaunched = s.AgentAnswered - ready
	s.PullDone = pulled.Time.Sub(start)
	if stopped == nil {
		return fmt.Errorf("containerd log %s has no shim line %q for sandbox %s within %s after ctr run returned: the agent's peak RSS is unknown", b.cfg.ContainerdLog, msgStopped, s.ID, stopLogWait)
	}
	if s.AgentPeak, err = stopped.Uint("agent_peak_rss_bytes"); err != nil {
		return err
	}
	if s.AgentRSS, err = stopped.Uint("agent_rss_bytes"); err != nil {
		return err
	}
	return nil
}
