package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// LogLine is one logrus text-format line ("time=... level=info msg=...
// k=v ..."), as containerd writes its own and its shims' logs.
type LogLine struct {
	// Time is the "time" field (RFC 3339 with nanoseconds), stamped by the
	// process that logged the line (the shim, for shim lines).
	Time time.Time
	// Msg is the "msg" field, unquoted.
	Msg string
	// Fields holds every key=value pair, values unquoted, including time,
	// level and msg.
	Fields map[string]string
}

// ParseLogLine parses one logrus text line. Values are either bare (up to
// the next space) or Go-quoted strings. It returns false for lines that
// are not key=value sequences, repeat a key, hold a bare value with '"'
// or '=' (both signs of two lines glued together), or lack a parsable time
// or a msg.
func ParseLogLine(s string) (LogLine, bool) {
	fields := map[string]string{}
	rest := strings.TrimSpace(s)
	for rest != "" {
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 || strings.ContainsAny(rest[:eq], " \t\"") {
			return LogLine{}, false
		}
		key := rest[:eq]
		rest = rest[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return LogLine{}, false
			}
			val, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			end := strings.IndexAny(rest, " \t")
			if end < 0 {
				end = len(rest)
			}
			val = rest[:end]
			rest = rest[end:]
			// logrus quotes values holding '"' or '=': two lines glued
			// together (a shim writing while containerd does) look like this.
			if strings.ContainsAny(val, "\"=") {
				return LogLine{}, false
			}
		}
		if _, dup := fields[key]; dup {
			return LogLine{}, false
		}
		fields[key] = val
		rest = strings.TrimLeft(rest, " \t")
	}
	t, err := time.Parse(time.RFC3339Nano, fields["time"])
	if err != nil {
		return LogLine{}, false
	}
	msg, ok := fields["msg"]
	if !ok {
		return LogLine{}, false
	}
	return LogLine{Time: t, Msg: msg, Fields: fields}, true
}

// Duration returns field key parsed as a Go duration ("3.5s", "850ms").
// The error names the key and the value found.
func (l LogLine) Duration(key string) (time.Duration, error) {
	v, ok := l.Fields[key]
	if !ok {
		return 0, fmt.Errorf("log line %q has no field %s", l.Msg, key)
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("log line %q: field %s=%q is not a Go duration", l.Msg, key, v)
	}
	return d, nil
}

// Uint returns field key parsed as a decimal unsigned integer. The error
// names the key and the value found.
func (l LogLine) Uint(key string) (uint64, error) {
	v, ok := l.Fields[key]
	if !ok {
		return 0, fmt.Errorf("log line %q has no field %s", l.Msg, key)
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("log line %q: field %s=%q is not an unsigned integer", l.Msg, key, v)
	}
	return n, nil
}

// ReadLogLines parses the log file at path from byte offset on and
// returns the lines that parse (see ParseLogLine); other lines are
// skipped. A last line without its newline is left for the next read.
// next is the offset to continue from.
func ReadLogLines(path string, offset int64) (lines []LogLine, next int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, offset, fmt.Errorf("open containerd log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, offset, fmt.Errorf("seek containerd log %s to %d: %w", path, offset, err)
	}
	r := bufio.NewReaderSize(f, 64<<10)
	next = offset
	for {
		s, err := r.ReadString('\n')
		if err == io.EOF {
			return lines, next, nil
		}
		if err != nil {
			return lines, next, fmt.Errorf("read containerd log %s: %w", path, err)
		}
		next += int64(len(s))
		if l, ok := ParseLogLine(s); ok {
			lines = append(lines, l)
		}
	}
}

// FileSize returns the size of the file at path in bytes.
func FileSize(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Size(), nil
}
