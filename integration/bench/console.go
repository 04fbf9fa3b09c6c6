package bench

import (
	"bytes"
	"io"
	"os"
	"strings"
	"time"
)

// Console milestones: strings whose first appearance on a VM's serial
// console marks a boot stage. The console log is written by QEMU as the
// guest prints, so the host time a string first appears is when the guest
// reached that stage (to within the polling interval).
const (
	// MarkFirmware is SeaBIOS's banner: QEMU is executing guest code.
	MarkFirmware = "SeaBIOS"
	// MarkKernel is the kernel's first message: the kernel is decompressed
	// and running.
	MarkKernel = "Linux version"
	// MarkAgentStart is cc-agent's first line: the kernel finished booting,
	// unpacked the initramfs and executed /init.
	MarkAgentStart = "cc-agent: starting"
	// MarkAgentListen is cc-agent's line once its transport is open.
	MarkAgentListen = "cc-agent: listening"
	// MarkFloorInit is what the bare-VM floor's /init prints before it
	// powers off (see package poweroff).
	MarkFloorInit = "coffer-floor: init reached"
)

// ConsoleLine is one line of a VM's serial console and when the host saw
// it complete.
type ConsoleLine struct {
	// At is the offset from the watch's start.
	At time.Duration
	// Text is the line without its newline and carriage returns.
	Text string
}

// consoleWatch polls a growing console log and records, for each marker,
// how long after start it first appeared, and when each line completed.
type consoleWatch struct {
	path    string
	start   time.Time
	markers []string
	seen    map[string]time.Duration
	buf     []byte
	offset  int64
	lines   []ConsoleLine
	// lineStart is where the current, incomplete line starts in buf.
	lineStart int
}

func newConsoleWatch(path string, start time.Time, markers ...string) *consoleWatch {
	return &consoleWatch{path: path, start: start, markers: markers, seen: map[string]time.Duration{}}
}

// setPath switches to another file (read from its beginning) if path
// differs from the current one.
func (w *consoleWatch) setPath(path string) {
	if path == "" || path == w.path {
		return
	}
	w.path, w.buf, w.offset, w.lines, w.lineStart = path, nil, 0, nil, 0
}

// poll reads what was appended since the last poll and stamps markers
// that appear for the first time with now. A missing file is not an
// error: the VM may not have created it yet, or may be gone.
func (w *consoleWatch) poll(now time.Time) {
	f, err := os.Open(w.path)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(w.offset, io.SeekStart); err != nil {
		return
	}
	b, _ := io.ReadAll(f)
	if len(b) == 0 {
		return
	}
	w.offset += int64(len(b))
	w.buf = append(w.buf, b...)
	at := now.Sub(w.start)
	for _, m := range w.markers {
		if _, ok := w.seen[m]; !ok && bytes.Contains(w.buf, []byte(m)) {
			w.seen[m] = at
		}
	}
	for {
		nl := bytes.IndexByte(w.buf[w.lineStart:], '\n')
		if nl < 0 {
			break
		}
		text := strings.TrimRight(string(w.buf[w.lineStart:w.lineStart+nl]), "\r")
		w.lines = append(w.lines, ConsoleLine{At: at, Text: text})
		w.lineStart += nl + 1
	}
}

// timeline returns the complete lines seen so far.
func (w *consoleWatch) timeline() []ConsoleLine { return append([]ConsoleLine(nil), w.lines...) }

// milestones returns the markers seen so far and when (since start).
func (w *consoleWatch) milestones() map[string]time.Duration {
	out := make(map[string]time.Duration, len(w.seen))
	for k, v := range w.seen {
		out[k] = v
	}
	return out
}

// text returns everything read so far.
func (w *consoleWatch) text() string { return string(w.buf) }
