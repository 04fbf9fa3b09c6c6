package bench

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/cofferhq/coffer/vmm"
)

// Targets printed next to the figures. Missing one is reported, never an
// error: machines are noisy.
const (
	// TargetRatio is the most (ctr run -> first output) / floor may be
	// under TCG.
	TargetRatio = 1.5
	// TargetShimPeakBytes is the most the shim's VmHWM may be (25 MiB).
	TargetShimPeakBytes = 25 << 20
	// TargetAgentPeakBytes is the most cc-agent's VmHWM may be (20 MiB).
	TargetAgentPeakBytes = 20 << 20
)

// Machine describes where the figures were taken, for the report header.
type Machine struct {
	// Date is when the bench ran.
	Date time.Time
	// CPUs is the number of host CPUs; CPUModel their model name.
	CPUs     int
	CPUModel string
	// Kernel is the host kernel release; QEMU the QEMU version line.
	Kernel, QEMU string
	// LoadBefore and LoadAfter are the host's 1, 5 and 15 minute load
	// averages (/proc/loadavg) before the first and after the last run;
	// empty when unknown. A busy host makes every figure noisy.
	LoadBefore, LoadAfter string
}

// runMetric is one per-run figure; ok is false when the run lacks it.
type runMetric struct {
	name string
	get  func(r *RunSample) (d time.Duration, ok bool)
}

// sinceLaunch returns a console milestone relative to QEMU's launch.
func sinceLaunch(mark string) func(r *RunSample) (time.Duration, bool) {
	return func(r *RunSample) (time.Duration, bool) {
		t, ok := r.Console[mark]
		return t - r.QEMULaunched, ok
	}
}

// phases returns the figures the report prints for container runs, in
// order; indented names are parts of the phase above them.
func phases() []runMetric {
	return []runMetric{
		{"total: ctr run -> first output line", func(r *RunSample) (time.Duration, bool) { return r.FirstOutput, true }},
		{"1. host: ctr run -> QEMU launched (ctr, containerd task create, shim start, image lookup)", func(r *RunSample) (time.Duration, bool) { return r.QEMULaunched, true }},
		{"2. VM start -> agent ready (QEMU launched -> cc-agent answered Health)", func(r *RunSample) (time.Duration, bool) { return r.AgentAnswered - r.QEMULaunched, true }},
		{"     QEMU exec -> QMP answered (shim's vm_start)", func(r *RunSample) (time.Duration, bool) { return r.VMStart, true }},
		{"     QEMU launched -> \"" + MarkFirmware + "\" on the console (firmware)", sinceLaunch(MarkFirmware)},
		{"     QEMU launched -> \"" + MarkKernel + "\" (kernel running)", sinceLaunch(MarkKernel)},
		{"     QEMU launched -> \"" + MarkAgentStart + "\" (kernel booted, initramfs unpacked, /init runs)", sinceLaunch(MarkAgentStart)},
		{"     QEMU launched -> \"" + MarkAgentListen + "\" (agent set up, transport open)", sinceLaunch(MarkAgentListen)},
		{"3. pull: agent ready -> image pulled in the guest", func(r *RunSample) (time.Duration, bool) { return r.PullDone - r.AgentAnswered, true }},
		{"     PullImage RPC (shim's duration: fetch, verify, unpack)", func(r *RunSample) (time.Duration, bool) { return r.PullRPC, true }},
		{"4. container start: image pulled -> first output line", func(r *RunSample) (time.Duration, bool) { return r.FirstOutput - r.PullDone, true }},
		{"     image pulled -> /tasks/create (stdio streams, guest runc create)", func(r *RunSample) (time.Duration, bool) {
			return r.TaskCreated - r.PullDone, r.TaskCreated > 0
		}},
		{"     /tasks/create -> /tasks/start (ctr's Start call, guest runc start)", func(r *RunSample) (time.Duration, bool) {
			return r.TaskStarted - r.TaskCreated, r.TaskCreated > 0 && r.TaskStarted > 0
		}},
		{"     /tasks/start -> first output line (process runs, stdout reaches ctr)", func(r *RunSample) (time.Duration, bool) {
			return r.FirstOutput - r.TaskStarted, r.TaskStarted > 0
		}},
	}
}

// floorMetric is one per-boot figure of the floor.
type floorMetric struct {
	name string
	get  func(f *FloorSample) (time.Duration, bool)
}

func floorPhases() []floorMetric {
	mark := func(m string) func(f *FloorSample) (time.Duration, bool) {
		return func(f *FloorSample) (time.Duration, bool) { t, ok := f.Console[m]; return t, ok }
	}
	return []floorMetric{
		{"total: QEMU exec -> QEMU exit (guest powered off)", func(f *FloorSample) (time.Duration, bool) { return f.Total, true }},
		{"     QEMU exec -> \"" + MarkFirmware + "\" (firmware)", mark(MarkFirmware)},
		{"     QEMU exec -> \"" + MarkKernel + "\" (kernel running)", mark(MarkKernel)},
		{"     QEMU exec -> /init reached", mark(MarkFloorInit)},
	}
}

// stats returns the median, min and max of the samples that have the
// figure, and how many do.
func stats(ds []time.Duration) (med, lo, hi time.Duration, n int) {
	if len(ds) == 0 {
		return 0, 0, 0, 0
	}
	med, _ = Median(ds)
	return med, slices.Min(ds), slices.Max(ds), len(ds)
}

// FirstOutputMedian returns the median time from `ctr run` to the first
// output line, and false without runs.
func (r *Results) FirstOutputMedian() (time.Duration, bool) {
	var ds []time.Duration
	for _, s := range r.Runs {
		ds = append(ds, s.FirstOutput)
	}
	return Median(ds)
}

// MedianRun returns the run whose first output time is the median (the
// lower middle one for an even count), or nil without runs.
func (r *Results) MedianRun() *RunSample {
	if len(r.Runs) == 0 {
		return nil
	}
	s := slices.Clone(r.Runs)
	slices.SortFunc(s, func(a, b *RunSample) int { return cmp.Compare(a.FirstOutput, b.FirstOutput) })
	return s[(len(s)-1)/2]
}

// FloorMedian returns the median floor boot, and false without boots.
func (r *Results) FloorMedian() (time.Duration, bool) {
	var ds []time.Duration
	for _, f := range r.Floors {
		ds = append(ds, f.Total)
	}
	return Median(ds)
}

// verdict renders whether a target is met.
func verdict(met bool) string {
	if met {
		return "met"
	}
	return "MISSED"
}

// table renders rows of a name column and right-aligned value columns.
type table struct {
	header []string
	rows   [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(b *strings.Builder) {
	all := append([][]string{t.header}, t.rows...)
	widths := map[int]int{}
	for _, r := range all {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	for _, r := range all {
		var line strings.Builder
		for i, c := range r {
			if i == 0 {
				fmt.Fprintf(&line, "%-*s", widths[0], c)
				continue
			}
			fmt.Fprintf(&line, "  %*s", widths[i], c)
		}
		b.WriteString(strings.TrimRight(line.String(), " "))
		b.WriteString("\n")
	}
}

// durationRow returns name, median, min and max of ds ("-" when empty).
func durationRow(name string, ds []time.Duration) []string {
	med, lo, hi, n := stats(ds)
	if n == 0 {
		return []string{name, "-", "-", "-"}
	}
	return []string{name, secs(med), secs(lo), secs(hi)}
}

// Report writes the human-readable figures: the phase table, the floor,
// the ratio, memory with targets, and one line per run.
func (r *Results) Report(w io.Writer, m Machine) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Coffer start-up benchmark, busybox test image: %d measured runs (after 1 warm-up), %s\n",
		len(r.Runs), m.Date.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "machine: %d CPUs (%s), host kernel %s, %s; accel %s; guest %d vCPU, %d MiB\n",
		m.CPUs, m.CPUModel, m.Kernel, m.QEMU, r.Accel, r.VCPUs, r.MemoryMiB)
	if m.LoadBefore != "" || m.LoadAfter != "" {
		fmt.Fprintf(&b, "host load average (1, 5, 15 min): %s before, %s after (the bench itself adds about 1)\n", m.LoadBefore, m.LoadAfter)
	}
	b.WriteString("\n")

	t := &table{header: []string{"Time from `ctr run` to the container's first output line", "median", "min", "max"}}
	for _, p := range phases() {
		var ds []time.Duration
		for _, s := range r.Runs {
			if d, ok := p.get(s); ok {
				ds = append(ds, d)
			}
		}
		t.add(durationRow("  "+p.name, ds)...)
	}
	t.add("")
	t.add("Bare-VM floor: same kernel, QEMU command line and accel; /init powers off at once")
	for _, p := range floorPhases() {
		var ds []time.Duration
		for _, f := range r.Floors {
			if d, ok := p.get(f); ok {
				ds = append(ds, d)
			}
		}
		t.add(durationRow("  "+p.name, ds)...)
	}
	t.write(&b)
	fmt.Fprintf(&b, "(each line is its own median, so parts need not add up; floor initramfs %.1f KiB, guest initramfs %.1f MiB)\n\n",
		float64(r.FloorInitrdBytes)/1024, float64(r.GuestInitrdBytes)/(1<<20))

	run, okRun := r.FirstOutputMedian()
	floor, okFloor := r.FloorMedian()
	if okRun && okFloor && floor > 0 {
		ratio := run.Seconds() / floor.Seconds()
		scope := "(TCG)"
		if r.Accel != vmm.AccelTCG {
			scope = fmt.Sprintf("(set for TCG; this run used %s)", r.Accel)
		}
		fmt.Fprintf(&b, "Ratio, median first output / median floor: %s / %s = %.2f   target <= %.1f %s: %s\n\n",
			secs(run), secs(floor), ratio, TargetRatio, scope, verdict(ratio <= TargetRatio))
	}

	var shimPeak, agentPeak, qemuPeak, qemuRSS, floorPeak []uint64
	for _, s := range r.Runs {
		shimPeak = append(shimPeak, s.Shim.Peak)
		agentPeak = append(agentPeak, s.AgentPeak)
		qemuPeak = append(qemuPeak, s.QEMU.Peak)
		qemuRSS = append(qemuRSS, s.QEMU.RSS)
	}
	for _, f := range r.Floors {
		floorPeak = append(floorPeak, f.QEMUPeak)
	}
	mem := func(xs []uint64) (string, string, uint64) {
		med, ok := MedianBytes(xs)
		if !ok {
			return "-", "-", 0
		}
		return mib(med), mib(slices.Max(xs)), med
	}
	t = &table{header: []string{"Peak memory (RSS)", "median", "max", "target"}}
	med, hi, shimMed := mem(shimPeak)
	t.add("  shim (containerd-shim-cc-v2) VmHWM", med, hi, fmt.Sprintf("<= %s: %s", mib(TargetShimPeakBytes), verdict(shimMed > 0 && shimMed <= TargetShimPeakBytes)))
	med, hi, agentMed := mem(agentPeak)
	t.add("  cc-agent VmHWM (in the guest)", med, hi, fmt.Sprintf("<= %s: %s", mib(TargetAgentPeakBytes), verdict(agentMed > 0 && agentMed <= TargetAgentPeakBytes)))
	med, hi, _ = mem(qemuPeak)
	t.add("  QEMU VmHWM (container runs)", med, hi, "informational")
	med, hi, _ = mem(qemuRSS)
	t.add("  QEMU VmRSS at the last sample", med, hi, "informational")
	med, hi, _ = mem(floorPeak)
	t.add("  QEMU peak RSS, bare-VM floor", med, hi, "informational")
	t.write(&b)
	b.WriteString("\n")

	t = &table{header: []string{"Per run (s; MiB)", "floor", "first output", "host", "VM->agent", "pull", "start", "shim", "agent", "qemu"}}
	for i, s := range r.Runs {
		fl := "-"
		if i < len(r.Floors) {
			fl = fmt.Sprintf("%.2f", r.Floors[i].Total.Seconds())
		}
		t.add("  "+s.ID, fl, fmt.Sprintf("%.2f", s.FirstOutput.Seconds()), fmt.Sprintf("%.2f", s.QEMULaunched.Seconds()),
			fmt.Sprintf("%.2f", (s.AgentAnswered-s.QEMULaunched).Seconds()), fmt.Sprintf("%.2f", (s.PullDone-s.AgentAnswered).Seconds()),
			fmt.Sprintf("%.2f", (s.FirstOutput-s.PullDone).Seconds()), fmt.Sprintf("%.1f", float64(s.Shim.Peak)/(1<<20)),
			fmt.Sprintf("%.1f", float64(s.AgentPeak)/(1<<20)), fmt.Sprintf("%.1f", float64(s.QEMU.Peak)/(1<<20)))
	}
	t.write(&b)
	_, err := io.WriteString(w, b.String())
	return err
}
