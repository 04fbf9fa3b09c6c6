package agent

import (
	"strings"
	"sync"

	"github.com/sirupsen/logrus"
)

const (
	// logRingLines is how many log lines Diagnostics returns at most.
	logRingLines = 1000
	// logLineBytes truncates single log lines (bytes).
	logLineBytes = 2048
)

// logRing is a logrus hook keeping the last logRingLines formatted lines
// for the Diagnostics RPC.
type logRing struct {
	mu    sync.Mutex
	lines []string
	next  int // index of the oldest line once the ring is full
	fmt   logrus.TextFormatter
}

func newLogRing() *logRing {
	return &logRing{fmt: logrus.TextFormatter{DisableColors: true, FullTimestamp: true}}
}

// Levels implements logrus.Hook: every level is kept.
func (r *logRing) Levels() []logrus.Level { return logrus.AllLevels }

// Fire implements logrus.Hook.
func (r *logRing) Fire(e *logrus.Entry) error {
	b, err := r.fmt.Format(e)
	if err != nil {
		return err
	}
	line := strings.TrimRight(string(b), "\n")
	if len(line) > logLineBytes {
		line = line[:logLineBytes] + "…"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lines) < logRingLines {
		r.lines = append(r.lines, line)
		return nil
	}
	r.lines[r.next] = line
	r.next = (r.next + 1) % logRingLines
	return nil
}

// snapshot returns the kept lines, oldest first.
func (r *logRing) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.lines))
	out = append(out, r.lines[r.next:]...)
	return append(out, r.lines[:r.next]...)
}
