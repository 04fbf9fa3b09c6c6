package harness

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// maxTailRead bounds how much of a log file tailFile reads: the last 1 MiB.
const maxTailRead = 1 << 20

// tailFile returns the last n lines of the file at path (fewer if the file
// is shorter, and only from its last 1 MiB). A missing or unreadable file
// yields a one-line explanation instead of an error, because tails are only
// printed as debugging aids for a test that already failed.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot stat %s: %v)", path, err)
	}
	off := st.Size() - maxTailRead
	if off < 0 {
		off = 0
	}
	data, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	return tailLines(data, n)
}

// tailLines returns the last n lines of data, without a trailing newline.
func tailLines(data []byte, n int) string {
	data = bytes.TrimRight(data, "\n")
	if len(data) == 0 {
		return "(empty)"
	}
	end := len(data)
	for i := 0; i < n; i++ {
		j := bytes.LastIndexByte(data[:end], '\n')
		if j < 0 {
			return string(data)
		}
		end = j
	}
	return string(data[end+1:])
}
