package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/vmm"
)

func sample(id string, first time.Duration, shimPeak, agentPeak uint64) *RunSample {
	return &RunSample{
		ID:            id,
		FirstOutput:   first,
		QEMULaunched:  50 * time.Millisecond,
		AgentAnswered: 5050 * time.Millisecond,
		PullDone:      first - 2*time.Second,
		TaskCreated:   first - 300*time.Millisecond,
		TaskStarted:   first - 100*time.Millisecond,
		VMStart:       40 * time.Millisecond,
		PullRPC:       1400 * time.Millisecond,
		Console:       map[string]time.Duration{MarkKernel: 950 * time.Millisecond},
		Shim:          Memory{Peak: shimPeak, RSS: shimPeak},
		QEMU:          Memory{Peak: 350 << 20, RSS: 340 << 20},
		AgentPeak:     agentPeak,
	}
}

func testResults() *Results {
	floor := func(d time.Duration) *FloorSample {
		return &FloorSample{Total: d, QEMUPeak: 228 << 20, Console: map[string]time.Duration{MarkKernel: 760 * time.Millisecond}}
	}
	return &Results{
		Runs: []*RunSample{
			sample("bench-1", 9*time.Second, 18<<20, 12<<20),
			sample("bench-2", 8*time.Second, 17<<20, 13<<20),
			sample("bench-3", 12*time.Second, 30<<20, 12<<20),
		},
		Floors:           []*FloorSample{floor(3 * time.Second), floor(4 * time.Second), floor(5 * time.Second)},
		FloorInitrdBytes: 709 << 10,
		GuestInitrdBytes: 9 << 20,
		MemoryMiB:        512,
		VCPUs:            1,
		Accel:            vmm.AccelTCG,
	}
}

func TestReport(t *testing.T) {
	var b strings.Builder
	m := Machine{Date: time.Date(2026, 11, 30, 17, 0, 0, 0, time.UTC), CPUs: 2, CPUModel: "Test CPU", Kernel: "6.1.0", QEMU: "QEMU emulator version 7.2.22", LoadBefore: "0.10 0.20 0.30", LoadAfter: "1.00 0.50 0.40"}
	require.NoError(t, testResults().Report(&b, m))
	out := b.String()
	t.Log("\n" + out)

	require.Contains(t, out, "3 measured runs (after 1 warm-up), 2026-11-30 17:00 UTC")
	require.Contains(t, out, "machine: 2 CPUs (Test CPU), host kernel 6.1.0, QEMU emulator version 7.2.22; accel tcg; guest 1 vCPU, 512 MiB")
	require.Contains(t, out, "host load average (1, 5, 15 min): 0.10 0.20 0.30 before, 1.00 0.50 0.40 after")
	require.Regexp(t, `total: ctr run -> first output line\s+9\.00 s\s+8\.00 s\s+12\.00 s`, out)
	require.Regexp(t, `2\. VM start -> agent ready .*\s+5\.00 s\s+5\.00 s\s+5\.00 s`, out)
	require.Regexp(t, `QEMU launched -> "Linux version" \(kernel running\)\s+0\.90 s`, out)
	require.Regexp(t, `QEMU launched -> "SeaBIOS" .*\s+-\s+-\s+-`, out, "a milestone no run saw")
	require.Regexp(t, `/tasks/create -> /tasks/start .*\s+0\.20 s`, out)
	require.Regexp(t, `total: QEMU exec -> QEMU exit \(guest powered off\)\s+4\.00 s\s+3\.00 s\s+5\.00 s`, out)
	require.Contains(t, out, "Ratio, median first output / median floor: 9.00 s / 4.00 s = 2.25   target <= 1.5 (TCG): MISSED")
	// Median shim peak 18 MiB meets the target although one run reached 30.
	require.Regexp(t, `shim \(containerd-shim-cc-v2\) VmHWM\s+18\.0 MiB\s+30\.0 MiB\s+<= 25\.0 MiB: met`, out)
	require.Regexp(t, `cc-agent VmHWM \(in the guest\)\s+12\.0 MiB\s+13\.0 MiB\s+<= 20\.0 MiB: met`, out)
	require.Regexp(t, `QEMU peak RSS, bare-VM floor\s+228\.0 MiB`, out)
	require.Regexp(t, `bench-3\s+5\.00\s+12\.00\s+0\.05\s+5\.00\s+4\.95\s+2\.00\s+30\.0\s+12\.0\s+350\.0`, out)
}

func TestReportTargets(t *testing.T) {
	r := testResults()
	for _, s := range r.Runs {
		s.FirstOutput = 4 * time.Second
		s.AgentPeak = 21 << 20
	}
	r.Accel = vmm.AccelKVM
	var b strings.Builder
	require.NoError(t, r.Report(&b, Machine{}))
	out := b.String()
	require.Contains(t, out, "= 1.00   target <= 1.5 (set for TCG; this run used kvm): met")
	require.Regexp(t, `cc-agent VmHWM \(in the guest\)\s+21\.0 MiB\s+21\.0 MiB\s+<= 20\.0 MiB: MISSED`, out)
}

func TestMedianRun(t *testing.T) {
	require.Nil(t, (&Results{}).MedianRun())
	require.Equal(t, "bench-1", testResults().MedianRun().ID)
	r := testResults()
	r.Runs = r.Runs[1:] // 8 s and 12 s: the lower middle one
	require.Equal(t, "bench-2", r.MedianRun().ID)
}

func TestWriteTimeline(t *testing.T) {
	s := sample("bench-1", 9*time.Second, 0, 0)
	s.PullBytes = 1150682
	s.Timeline = []ConsoleLine{
		{At: 150 * time.Millisecond, Text: "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)"},
		{At: 950 * time.Millisecond, Text: "[    0.000000] Linux version 6.1.0\r"},
		{At: 960 * time.Millisecond, Text: "\x1b[2J"},
	}
	var b strings.Builder
	require.NoError(t, WriteTimeline(&b, s))
	require.Equal(t, `Timeline of bench-1 (seconds since `+"`ctr run`"+` started; console lines as the host saw them, to within 20ms):
    0.000  host: ctr run started
    0.050  host: shim launched QEMU
    0.150  console: SeaBIOS (version 1.16.2)
    0.950  console: [    0.000000] Linux version 6.1.0
    5.050  host: cc-agent answered the shim's Health call
    7.000  host: image pulled in the guest (PullImage RPC 1.40 s, 1150682 bytes)
    8.700  host: /tasks/create published by the shim
    8.900  host: /tasks/start published by the shim
    9.000  host: ctr printed the container's first output line
`, b.String())
	require.ErrorContains(t, WriteTimeline(&b, nil), "no run to show")
}
