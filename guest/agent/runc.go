package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// runcCall runs fn with a go-runc handle (JSON log format, --root
// Options.RuncRoot) whose log goes to a fresh file in bundle, so that runc's
// own error message can be put into the returned error. what names the
// operation for the error ("runc create").
func (a *Agent) runcCall(bundle, what string, fn func(r *runc.Runc) error) error {
	logPath := filepath.Join(bundle, fmt.Sprintf("runc-%d.log.json", a.runcSeq.Add(1)))
	defer os.Remove(logPath)
	r := &runc.Runc{
		Command:      a.opts.Runc,
		Root:         a.opts.RuncRoot,
		Log:          logPath,
		LogFormat:    runc.JSON,
		PdeathSignal: unix.SIGKILL,
	}
	err := fn(r)
	if err == nil {
		return nil
	}
	if msg := lastRuncError(logPath); msg != "" {
		return fmt.Errorf("%s: %s: %w", what, msg, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// lastRuncError returns the message of the last "error" line of a runc
// JSON log, or "".
func lastRuncError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var msg string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Level == "error" {
			msg = strings.TrimSpace(line.Msg)
		}
	}
	return msg
}

// killError classifies a failed kill: a process or container that is gone
// is ErrNotFound.
func killError(err error) error {
	if err == nil {
		return nil
	}
	s := strings.ToLower(err.Error())
	switch {
	case errors.Is(err, unix.ESRCH),
		strings.Contains(s, "process already finished"),
		strings.Contains(s, "container not running"),
		strings.Contains(s, "no such process"):
		return fmt.Errorf("%w: process already finished: %w", err, errdefs.ErrNotFound)
	case strings.Contains(s, "does not exist"):
		return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	}
	return err
}

// killAll sends sig to every process of container c with runc kill --all.
func (a *Agent) killAll(ctx context.Context, c *container, sig unix.Signal) error {
	return killError(a.runcCall(c.bundle, "runc kill --all", func(r *runc.Runc) error {
		return r.Kill(ctx, c.id, int(sig), &runc.KillOpts{All: true})
	}))
}
