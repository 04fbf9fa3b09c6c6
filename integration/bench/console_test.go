package bench

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestConsoleWatch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "console.log")
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := newConsoleWatch(path, start, MarkFirmware, MarkKernel, MarkAgentStart)

	w.poll(start.Add(10 * time.Millisecond)) // no file yet
	require.Empty(t, w.milestones())

	appendFile(t, path, "\x1bc\x1b[?7lSeaBIOS (version 1.16.2)\r\nProbing EDD... ")
	w.poll(start.Add(100 * time.Millisecond))
	// The kernel's first line continues SeaBIOS's unterminated one.
	appendFile(t, path, "[    0.000000] Linux version 6.1.0\n[    0.08] Kernel command line: console=ttyS0\ncc-agent: sta")
	w.poll(start.Add(900 * time.Millisecond))
	appendFile(t, path, "rting\n")
	w.poll(start.Add(3 * time.Second))

	require.Equal(t, map[string]time.Duration{
		MarkFirmware:   100 * time.Millisecond,
		MarkKernel:     900 * time.Millisecond,
		MarkAgentStart: 3 * time.Second,
	}, w.milestones())
	require.Equal(t, []ConsoleLine{
		{At: 100 * time.Millisecond, Text: "\x1bc\x1b[?7lSeaBIOS (version 1.16.2)"},
		{At: 900 * time.Millisecond, Text: "Probing EDD... [    0.000000] Linux version 6.1.0"},
		{At: 900 * time.Millisecond, Text: "[    0.08] Kernel command line: console=ttyS0"},
		{At: 3 * time.Second, Text: "cc-agent: starting"},
	}, w.timeline())

	// Switching files starts over; the same path is a no-op.
	other := filepath.Join(dir, "other.log")
	appendFile(t, other, "SeaBIOS\n")
	w.setPath(path)
	require.Len(t, w.timeline(), 4)
	w.setPath(other)
	w.poll(start.Add(5 * time.Second))
	require.Equal(t, []ConsoleLine{{At: 5 * time.Second, Text: "SeaBIOS"}}, w.timeline())
	require.Equal(t, 100*time.Millisecond, w.milestones()[MarkFirmware], "a marker keeps its first time")
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	require.NoError(t, err)
	_, err = f.WriteString(s)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}
