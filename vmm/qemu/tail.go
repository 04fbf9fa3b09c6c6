package qemu

import (
	"strings"
	"sync"
)

// stderrTailSize is how many bytes of QEMU's stderr are kept in memory for
// error messages (the full stream goes to StateDir/stderr.log).
const stderrTailSize = 4096

// tailBuffer is an io.Writer that keeps only the last max bytes written. It is
// safe for concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
	cut bool // bytes were dropped from the front
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= t.max {
		p = p[len(p)-t.max:]
		t.buf = append(t.buf[:0], p...)
		t.cut = true
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.cut = true
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// String returns the kept bytes as one line: surrounding space trimmed,
// line breaks turned into "; ", and "..." in front when bytes were dropped.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.buf))
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	s = strings.Join(lines, "; ")
	if t.cut {
		s = "..." + s
	}
	return s
}
