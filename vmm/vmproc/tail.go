package vmproc

import (
	"io"
	"os"
	"strings"
)

// stderrTailSize is how many bytes of Spec.StderrLog error messages quote.
const stderrTailSize = 4096

// StderrTail returns the last 4 KiB of Spec.StderrLog as one line: space
// trimmed, line breaks turned into "; ", and "..." in front when the file
// is longer. It says "no output on stderr (<path>)" for an empty file and
// "no stderr log (<error>)" for one it cannot open.
func (p *Proc) StderrTail() string {
	return fileTail(p.spec.StderrLog, stderrTailSize)
}

// fileTail returns the last max bytes of the file at path as StderrTail
// words them.
func fileTail(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "no stderr log (" + err.Error() + ")"
	}
	defer f.Close()
	cut := ""
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		f.Seek(fi.Size()-max, io.SeekStart)
		cut = "..."
	}
	b, _ := io.ReadAll(io.LimitReader(f, max))
	lines := strings.FieldsFunc(strings.TrimSpace(string(b)), func(r rune) bool { return r == '\n' || r == '\r' })
	if len(lines) == 0 {
		return "no output on stderr (" + path + ")"
	}
	return cut + strings.Join(lines, "; ")
}
