package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// CtrError is the error Ctr returns when ctr ran but exited non-zero, or
// could not be run at all (ExitCode -1). Use errors.As to read ExitCode:
// `ctr run` exits with the container task's exit status.
type CtrError struct {
	// Args are ctr's arguments after the global --address/--namespace flags.
	Args []string
	// ExitCode is ctr's exit status, or -1 if it did not exit normally
	// (killed, context expired, or not started).
	ExitCode int
	// Stdout and Stderr are what ctr printed.
	Stdout, Stderr string
	// Err is the underlying exec error.
	Err error
}

// Error names the command, the exit status and ctr's stderr.
func (e *CtrError) Error() string {
	return fmt.Sprintf("run `ctr %s`: exit status %d (%v); stderr: %s",
		strings.Join(e.Args, " "), e.ExitCode, e.Err, strings.TrimSpace(e.Stderr))
}

// Unwrap returns the underlying exec error (e.g. context.DeadlineExceeded
// wrapped by exec when the context expired).
func (e *CtrError) Unwrap() error { return e.Err }

// Command returns an unstarted `ctr --address <Address()> --namespace
// <Namespace()> args...` bound to ctx (killed when ctx is done, then its
// pipes are closed within 5 s), with CONTAINERD_* variables removed from
// its environment. Use it to attach your own stdin/stdout or a PTY;
// otherwise prefer Ctr.
func (c *Containerd) Command(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"--address", c.address, "--namespace", c.namespace}, args...)
	cmd := exec.CommandContext(ctx, c.ctrPath, full...)
	cmd.Env = withoutEnv(os.Environ(), "CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE", "CONTAINERD_SNAPSHOTTER")
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Ctr runs ctr (see Command) with stdin from /dev/null, waits for it and
// returns its stdout. Any failure, including a non-zero exit, is a
// *CtrError carrying the exit code and both outputs.
func (c *Containerd) Ctr(ctx context.Context, args ...string) (string, error) {
	cmd := c.Command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.String(), nil
	}
	ce := &CtrError{Args: args, ExitCode: -1, Stdout: stdout.String(), Stderr: stderr.String(), Err: err}
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		ce.ExitCode = ee.ExitCode()
	}
	if ctx.Err() != nil {
		ce.Err = fmt.Errorf("%w (context: %w)", err, ctx.Err())
	}
	return stdout.String(), ce
}

// ImagePull runs `ctr image pull --plain-http <ref>` against c, which
// fetches ref from a plain-HTTP registry (such as a Registry) into c's
// content store and unpacks it for the host platform into the default
// snapshotter. The error is a *CtrError (see Ctr).
func ImagePull(ctx context.Context, c *Containerd, ref string) error {
	_, err := c.Ctr(ctx, "image", "pull", "--plain-http", ref)
	return err
}

// ImagePullCC pulls ref over plain HTTP with the cc snapshotter: containerd
// fetches the index, manifest and config, and records the layers in
// cc-snapshotter without fetching or unpacking them.
func ImagePullCC(ctx context.Context, c *Containerd, ref string) error {
	_, err := c.Ctr(ctx, "image", "pull", "--plain-http", "--snapshotter", CCSnapshotterName, ref)
	return err
}
