// Package bootlog explains how far a guest got, from its serial console log
// (vmm.Config.ConsoleLogPath), so that a shim whose agent never answered can
// say why instead of reporting a bare timeout.
//
// It relies on the kernel printing to ttyS0 (cmdline "console=ttyS0
// loglevel=6", which prints "Linux version ..." first) and on cc-agent
// writing the marker lines below to /dev/console.
package bootlog

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// Markers cc-agent writes to /dev/console, each at the start of its own line.
const (
	// AgentStarting is printed as soon as cc-agent runs as PID 1.
	AgentStarting = "cc-agent: starting"
	// AgentListening is printed once cc-agent accepts host connections.
	AgentListening = "cc-agent: listening"
	// AgentFatal starts the line cc-agent prints before it gives up,
	// followed by a space and the reason, for example
	// "cc-agent: fatal: mount /proc: permission denied".
	AgentFatal = "cc-agent: fatal:"
)

// tailLines is how many console lines a description quotes.
const tailLines = 8

// maxLineLen bounds each quoted console line, in bytes.
const maxLineLen = 240

// Files larger than this are read as their head (for kernel banners) plus
// their tail (for the latest state), in bytes.
const (
	readHead = 64 << 10
	readTail = 1 << 20
)

var (
	// ansiEscape matches the terminal control sequences SeaBIOS and the
	// kernel's boot stub print (ESC c, CSI sequences such as ESC[2J).
	ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_]|c)`)
	// outOfMemory are console messages that show the guest running out
	// of RAM while it boots: the kernel failing to unpack the initramfs
	// into memory, and the OOM killer.
	outOfMemory = []string{"Initramfs unpacking failed", "Out of memory", "invoked oom-killer"}
	// printkTime matches a kernel message's timestamp, "[    0.000000]".
	printkTime = regexp.MustCompile(`^\[\s*\d+\.\d+\]`)
)

// Describe returns one line saying how far the boot recorded in log got,
// checking in this order:
//   - "cc-agent started but failed: <reason>" (an AgentFatal line);
//   - "kernel panicked: <panic line>", followed by "; the guest ran out of
//     memory while booting (<evidence>): give the VM more RAM" when the
//     console shows the initramfs failing to unpack or the OOM killer;
//   - "cc-agent is listening, but the host could not connect to it: ...";
//   - "cc-agent started but never began listening: <last lines>";
//   - "kernel booted, cc-agent never started: <last lines>", when the log
//     has "Linux version", a printk timestamp or the kernel's "Probing
//     EDD" boot-stub line;
//   - "firmware ran but the kernel printed nothing: ...", for firmware
//     output alone (SeaBIOS prints its banner to the serial port);
//   - "no console output: the firmware or kernel never started (check
//     accel and kernel)" for an empty log.
//
// <last lines> are the last 8 non-empty lines, joined with " | ", terminal
// control sequences removed.
func Describe(log []byte) string {
	lines := cleanLines(log)
	if len(lines) == 0 {
		return "no console output: the firmware or kernel never started (check accel and kernel)"
	}
	var starting, listening, kernel bool
	panicLine, oomLine := "", ""
	for _, l := range lines {
		switch {
		case strings.Contains(l, AgentFatal):
			_, reason, _ := strings.Cut(l, AgentFatal)
			reason = strings.TrimSpace(reason)
			if reason == "" {
				reason = "no reason given; last console lines: " + tail(lines)
			}
			return "cc-agent started but failed: " + reason
		case strings.Contains(l, AgentListening):
			listening = true
		case strings.Contains(l, AgentStarting):
			starting = true
		}
		if i := strings.Index(l, "Kernel panic"); i >= 0 && panicLine == "" {
			panicLine = l[i:]
		}
		if oomLine == "" {
			for _, m := range outOfMemory {
				if i := strings.Index(l, m); i >= 0 {
					oomLine = l[i:]
					break
				}
			}
		}
		if !kernel && (strings.Contains(l, "Linux version") || printkTime.MatchString(l) || strings.HasPrefix(l, "Probing EDD")) {
			kernel = true
		}
	}
	switch {
	case panicLine != "" && oomLine != "":
		return "kernel panicked: " + panicLine + "; the guest ran out of memory while booting (" + oomLine + "): give the VM more RAM (hypervisor.memory_mib, or the pod's memory limit)"
	case panicLine != "":
		return "kernel panicked: " + panicLine
	case listening:
		return "cc-agent is listening, but the host could not connect to it: check that host and guest use the same agent transport (virtio-serial port or vsock CID)"
	case starting:
		return "cc-agent started but never began listening: " + tail(lines)
	case kernel:
		return "kernel booted, cc-agent never started: " + tail(lines)
	default:
		return "firmware ran but the kernel printed nothing (check the kernel image, and console=ttyS0 in the kernel command line): " + tail(lines)
	}
}

// DescribeFile reads the console log at path and describes it (see
// Describe). An unreadable file is described as such, with the reason.
func DescribeFile(path string) string {
	b, err := readBounded(path)
	if err != nil {
		return fmt.Sprintf("no console log: %v", err)
	}
	return Describe(b)
}

// readBounded reads path whole if it is small, else its first readHead and
// last readTail bytes.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() <= readHead+readTail {
		return io.ReadAll(f)
	}
	head := make([]byte, readHead)
	if _, err := io.ReadFull(f, head); err != nil {
		return nil, err
	}
	end := make([]byte, readTail)
	if _, err := f.ReadAt(end, fi.Size()-readTail); err != nil && err != io.EOF {
		return nil, err
	}
	return append(append(head, '\n'), end...), nil
}

// cleanLines splits log into lines without terminal control sequences,
// carriage returns or surrounding space, dropping empty lines.
func cleanLines(log []byte) []string {
	log = ansiEscape.ReplaceAll(log, nil)
	var out []string
	for _, raw := range bytes.Split(log, []byte{'\n'}) {
		l := strings.TrimSpace(strings.Map(func(r rune) rune {
			if r == '\r' || r == '\t' {
				return ' '
			}
			if r < 0x20 || r == 0x7f {
				return -1
			}
			return r
		}, string(raw)))
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// tail returns the last tailLines lines, each cut to maxLineLen, joined with
// " | ".
func tail(lines []string) string {
	if len(lines) > tailLines {
		lines = lines[len(lines)-tailLines:]
	}
	cut := make([]string, len(lines))
	for i, l := range lines {
		if len(l) > maxLineLen {
			l = strings.ToValidUTF8(l[:maxLineLen], "") + "..."
		}
		cut[i] = l
	}
	return strings.Join(cut, " | ")
}
