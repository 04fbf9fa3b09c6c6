package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ShimBinary is the file name of the Coffer shim.
const ShimBinary = "containerd-shim-cc-v2"

// Memory is a process's resident set, in bytes, from /proc/<pid>/status.
type Memory struct {
	// RSS is VmRSS: resident now.
	RSS uint64
	// Peak is VmHWM: the most ever resident.
	Peak uint64
}

// ReadMemory reads VmRSS and VmHWM of pid. It fails if the process is gone
// or the status file lacks them (kernel threads).
func ReadMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	return parseStatusMemory(b, pid)
}

// parseStatusMemory extracts VmRSS and VmHWM (kB) from a status file.
func parseStatusMemory(b []byte, pid int) (Memory, error) {
	var m Memory
	var seen int
	for _, line := range strings.Split(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return Memory{}, fmt.Errorf("read memory of pid %d: %s is %q, want \"<n> kB\"", pid, key, strings.TrimSpace(val))
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("read memory of pid %d: %s is %q, want \"<n> kB\"", pid, key, strings.TrimSpace(val))
		}
		if key == "VmRSS" {
			m.RSS = n * 1024
		} else {
			m.Peak = n * 1024
		}
		seen++
	}
	if seen != 2 {
		return Memory{}, fmt.Errorf("read memory of pid %d: status has no VmRSS/VmHWM (a kernel thread or a zombie?)", pid)
	}
	return m, nil
}

// isShimFor reports whether argv is the long-running Coffer shim serving
// container id for the containerd at address: the binary is ShimBinary,
// the arguments name "-id <id>" and "-address <address>", and the last
// argument is not the one-shot "start" or "delete" action.
func isShimFor(argv []string, id, address string) bool {
	if len(argv) < 2 || filepath.Base(argv[0]) != ShimBinary {
		return false
	}
	if last := argv[len(argv)-1]; last == "start" || last == "delete" {
		return false
	}
	return flagValue(argv, "-id") == id && flagValue(argv, "-address") == address
}

// flagValue returns the argument after flag in argv, or "".
func flagValue(argv []string, flag string) string {
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == flag {
			return argv[i+1]
		}
	}
	return ""
}

// isQEMU reports whether argv runs a qemu-system-* binary.
func isQEMU(argv []string) bool {
	return len(argv) > 0 && strings.HasPrefix(filepath.Base(argv[0]), "qemu-system")
}

// qemuConsolePath returns the serial console log path on a QEMU command
// line built by vmm/qemu ("-chardev file,id=console,path=<path>"), or "".
func qemuConsolePath(argv []string) string {
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] != "-chardev" || !strings.HasPrefix(argv[i+1], "file,id=console,") {
			continue
		}
		_, p, ok := strings.Cut(argv[i+1], ",path=")
		if ok {
			return strings.ReplaceAll(p, ",,", ",")
		}
	}
	return ""
}
