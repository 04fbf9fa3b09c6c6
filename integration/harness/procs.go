package harness

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Proc is one host process as seen in /proc at the time it was listed.
// StartTime (field 22 of /proc/<pid>/stat, clock ticks since boot) tells a
// process apart from a later one that reuses its PID.
type Proc struct {
	PID       int
	PPID      int
	StartTime uint64
	// State is the one-letter state from /proc/<pid>/stat ('R', 'S', 'Z', ...).
	State byte
	// Cmdline is argv as found in /proc/<pid>/cmdline.
	Cmdline []string
	// Environ is the environment from /proc/<pid>/environ ("K=V" strings).
	Environ []string
}

// String renders the process as "pid N: argv..." for test messages.
func (p Proc) String() string {
	return fmt.Sprintf("pid %d: %s", p.PID, strings.Join(p.Cmdline, " "))
}

// IsQEMU reports whether the process runs a qemu-system-* binary.
func (p Proc) IsQEMU() bool {
	return len(p.Cmdline) > 0 && strings.HasPrefix(filepath.Base(p.Cmdline[0]), "qemu-system")
}

// IsVMM reports whether the process runs a VMM the shim starts: a
// qemu-system-* binary or cloud-hypervisor ($COFFER_VMM=cloud-hypervisor).
func (p Proc) IsVMM() bool {
	return p.IsQEMU() || (len(p.Cmdline) > 0 && filepath.Base(p.Cmdline[0]) == "cloud-hypervisor")
}

// Mentions reports whether s occurs in any argument or environment entry.
func (p Proc) Mentions(s string) bool {
	for _, a := range p.Cmdline {
		if strings.Contains(a, s) {
			return true
		}
	}
	for _, e := range p.Environ {
		if strings.Contains(e, s) {
			return true
		}
	}
	return false
}

// Alive reports whether the process still exists and is not a zombie: a
// process with the same PID and start time is in /proc in a state other
// than 'Z' (zombie) or 'X' (dead).
func (p Proc) Alive() bool {
	now, err := readProc(p.PID)
	if err != nil {
		return false
	}
	return now.StartTime == p.StartTime && now.State != 'Z' && now.State != 'X'
}

// ListProcs returns every process in /proc. Processes that exit while being
// read are left out; it fails only if /proc itself cannot be read.
func ListProcs() ([]Proc, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var procs []Proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, err := readProc(pid)
		if err != nil {
			continue
		}
		procs = append(procs, p)
	}
	return procs, nil
}

// readProc reads /proc/<pid>/{stat,cmdline,environ}. Kernel threads have an
// empty cmdline.
func readProc(pid int) (Proc, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return Proc{}, err
	}
	p := Proc{PID: pid}
	// The command name (field 2) is in parentheses and may itself hold
	// spaces and parentheses; the fields after the last ')' are fixed.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return Proc{}, fmt.Errorf("parse %s/stat: no ')' in %q", dir, stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state), f[1] field 4 (ppid), f[19] field 22 (starttime).
	if len(f) < 20 {
		return Proc{}, fmt.Errorf("parse %s/stat: %d fields after the command name, want at least 20", dir, len(f))
	}
	p.State = f[0][0]
	if p.PPID, err = strconv.Atoi(f[1]); err != nil {
		return Proc{}, fmt.Errorf("parse ppid in %s/stat: %w", dir, err)
	}
	if p.StartTime, err = strconv.ParseUint(f[19], 10, 64); err != nil {
		return Proc{}, fmt.Errorf("parse starttime in %s/stat: %w", dir, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		p.Cmdline = splitNUL(b)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "environ")); err == nil {
		p.Environ = splitNUL(b)
	}
	return p, nil
}

func splitNUL(b []byte) []string {
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x00")
}

// Descendants returns the processes in procs whose parent chain reaches
// the process with PID root (root itself excluded).
func Descendants(procs []Proc, root int) []Proc {
	children := make(map[int][]Proc)
	for _, p := range procs {
		children[p.PPID] = append(children[p.PPID], p)
	}
	var out []Proc
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			out = append(out, c)
			queue = append(queue, c.PID)
		}
	}
	return out
}

// ShimProcs returns the long-running containerd-shim-cc-v2 processes in
// procs serving container id: argv[0] ends in containerd-shim-cc-v2, "-id"
// is followed by id, and the last argument is not one of the short-lived
// actions "start" or "delete". When address is non-empty the process must
// also have "-address" followed by address (the containerd socket), which
// tells apart shims of different containerd instances.
func ShimProcs(procs []Proc, id, address string) []Proc {
	var out []Proc
	for _, p := range procs {
		if len(p.Cmdline) == 0 || filepath.Base(p.Cmdline[0]) != ShimBinary {
			continue
		}
		if last := p.Cmdline[len(p.Cmdline)-1]; last == "start" || last == "delete" {
			continue
		}
		if id != "" && flagValue(p.Cmdline, "id") != id {
			continue
		}
		if address != "" && flagValue(p.Cmdline, "address") != address {
			continue
		}
		out = append(out, p)
	}
	return out
}

// flagValue returns the value following "-name" or "--name" in args, or
// given as "-name=value"; "" when absent.
func flagValue(args []string, name string) string {
	for i, a := range args {
		trimmed := strings.TrimLeft(a, "-")
		if len(trimmed) == len(a) {
			continue
		}
		if trimmed == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(trimmed, name+"="); ok {
			return v
		}
	}
	return ""
}
