package bench

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Lines as containerd 2.4 wrote them during a real run (shortened image
// references).
const (
	bootedLine  = `time="2026-11-30T16:30:06.245635736Z" level=info msg="VM booted and cc-agent answered" agent_ready=5.568982657s runtime=io.containerd.cc.v2 sandbox=dbg-1 transport=virtio-serial vm_start=46.609231ms`
	pulledLine  = `time="2026-11-30T16:30:08.102869029Z" level=info msg="image pulled in the guest" bytes=1150682 duration=1.857155853s image="127.0.0.1:23364/busybox:latest@sha256:83a6" manifest="sha256:83a6" runtime=io.containerd.cc.v2`
	stoppedLine = `time="2026-11-30T16:30:10.542547631Z" level=info msg="stopping the VM" agent_peak_rss_bytes=13107200 agent_rss_bytes=12582912 runtime=io.containerd.cc.v2 sandbox=dbg-1`
)

func TestParseLogLine(t *testing.T) {
	l, ok := ParseLogLine(bootedLine + "\n")
	require.True(t, ok)
	require.Equal(t, "VM booted and cc-agent answered", l.Msg)
	require.Equal(t, time.Date(2026, 11, 30, 16, 30, 6, 245635736, time.UTC), l.Time)
	require.Equal(t, "dbg-1", l.Fields["sandbox"])
	d, err := l.Duration("agent_ready")
	require.NoError(t, err)
	require.Equal(t, 5568982657*time.Nanosecond, d)
	d, err = l.Duration("vm_start")
	require.NoError(t, err)
	require.Equal(t, 46609231*time.Nanosecond, d)

	_, err = l.Duration("missing")
	require.ErrorContains(t, err, "no field missing")
	_, err = l.Duration("transport")
	require.ErrorContains(t, err, `transport="virtio-serial" is not a Go duration`)

	l, ok = ParseLogLine(pulledLine)
	require.True(t, ok)
	require.Equal(t, "127.0.0.1:23364/busybox:latest@sha256:83a6", l.Fields["image"])
	n, err := l.Uint("bytes")
	require.NoError(t, err)
	require.Equal(t, uint64(1150682), n)
	_, err = l.Uint("image")
	require.ErrorContains(t, err, "not an unsigned integer")
}

func TestParseLogLineQuoting(t *testing.T) {
	l, ok := ParseLogLine(`time="2026-01-02T03:04:05Z" level=warning msg="say \"hi\" = ok" error="a b\nc"`)
	require.True(t, ok)
	require.Equal(t, `say "hi" = ok`, l.Msg)
	require.Equal(t, "a b\nc", l.Fields["error"])
}

func TestParseLogLineRejects(t *testing.T) {
	for name, s := range map[string]string{
		"empty":          "",
		"not key=value":  "panic: something went wrong",
		"no time":        `level=info msg="x"`,
		"bad time":       `time="yesterday" level=info msg="x"`,
		"no msg":         `time="2026-01-02T03:04:05Z" level=info`,
		"unterminated":   `time="2026-01-02T03:04:05Z" msg="x`,
		"glued lines":    `time="2026-01-02T03:04:05Z" msg=x namespace=atime="2026-01-02T03:04:05Z" level=warning msg="y z"`,
		"space in key":   `time="2026-01-02T03:04:05Z" msg=x a b=c`,
		"stray go panic": `goroutine 1 [running]:`,
	} {
		t.Run(name, func(t *testing.T) {
			_, ok := ParseLogLine(s)
			require.False(t, ok, "line %q", s)
		})
	}
}

func TestReadLogLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "containerd.log")
	content := bootedLine + "\nnot a log line\n" + pulledLine + "\n" + stoppedLine[:40]
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))

	lines, next, err := ReadLogLines(path, 0)
	require.NoError(t, err)
	require.Len(t, lines, 2)
	require.Equal(t, msgBooted, lines[0].Msg)
	require.Equal(t, msgPulled, lines[1].Msg)
	// The unterminated last line is left for the next read.
	require.Equal(t, int64(len(content)-40), next)

	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(stoppedLine[40:] + "\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	lines, _, err = ReadLogLines(path, next)
	require.NoError(t, err)
	require.Len(t, lines, 1)
	require.Equal(t, msgStopped, lines[0].Msg)
	peak, err := lines[0].Uint("agent_peak_rss_bytes")
	require.NoError(t, err)
	require.Equal(t, uint64(13107200), peak)

	_, _, err = ReadLogLines(filepath.Join(t.TempDir(), "missing.log"), 0)
	require.ErrorContains(t, err, "open containerd log")
}
