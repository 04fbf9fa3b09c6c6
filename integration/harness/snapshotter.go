package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// CCSnapshotterName is the proxy snapshotter name StartContainerd
// registers for cc-snapshotter (`--snapshotter cc`).
const CCSnapshotterName = "cc"

// snapshotterStartTimeout bounds the wait for cc-snapshotter's socket.
const snapshotterStartTimeout = 15 * time.Second

// Snapshotter is a cc-snapshotter process private to one Containerd: its
// metadata root and socket live in the containerd's temp dir.
type Snapshotter struct {
	bin     string
	root    string
	address string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// startSnapshotter starts build/bin/cc-snapshotter with its root in
// dir/ccsn and its socket at dir/ccsn.sock, and waits for the socket.
func startSnapshotter(dir string) (*Snapshotter, error) {
	bin, err := binary("cc-snapshotter")
	if err != nil {
		return nil, err
	}
	s := &Snapshotter{
		bin:     bin,
		root:    filepath.Join(dir, "ccsn"),
		address: filepath.Join(dir, "ccsn.sock"),
		logPath: filepath.Join(dir, "cc-snapshotter.log"),
	}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Snapshotter) start() error {
	logFile, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open cc-snapshotter log: %w", err)
	}
	defer logFile.Close()
	s.cmd = exec.Command(s.bin, "--root", s.root, "--address", s.address, "--log-level", "debug")
	s.cmd.Stdout = logFile
	s.cmd.Stderr = logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	exited := make(chan struct{})
	s.exited = exited
	if err := s.cmd.Start(); err != nil {
		close(exited)
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	cmd := s.cmd
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(snapshotterStartTimeout)
	for {
		if fi, err := os.Stat(s.address); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("cc-snapshotter exited during startup (%v); log tail (%s):\n%s", cmd.ProcessState, s.logPath, tailFile(s.logPath, 30))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("cc-snapshotter did not create %s within %s; log tail:\n%s", s.address, snapshotterStartTimeout, tailFile(s.logPath, 30))
		}
	}
}

// Address returns the snapshotter's gRPC socket path.
func (s *Snapshotter) Address() string { return s.address }

// Root returns the snapshotter's root directory (metadata.db only).
func (s *Snapshotter) Root() string { return s.root }

// LogPath returns the snapshotter's log file.
func (s *Snapshotter) LogPath() string { return s.logPath }

// Stop stops the snapshotter: SIGTERM, then SIGKILL after 10 s.
func (s *Snapshotter) Stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
}

// Restart stops the snapshotter gracefully and starts it again on the same
// root and socket.
func (s *Snapshotter) Restart() error {
	s.Stop()
	return s.start()
}
