package vmm

import (
	"bufio"
	"os"
	"strings"
)

const (
	kvmDevice   = "/dev/kvm"
	cpuinfoPath = "/proc/cpuinfo"
)

// ResolveAccel turns AccelAuto (or an empty Accel) into a concrete
// accelerator and returns any other value unchanged.
//
// Auto picks AccelKVM only when /dev/kvm opens read-write AND /proc/cpuinfo
// has no "hypervisor" CPU flag; otherwise it picks AccelTCG. The second test
// exists because nested KVM on cloud VMs usually opens fine but then fails at
// run time with "KVM internal error. Suberror: 1 / emulation failure" once the
// guest boots, as it does on Coffer's own build machines. Set AccelKVM
// explicitly to use nested KVM anyway.
func ResolveAccel(a Accel) Accel {
	return resolveAccel(a, kvmDevice, cpuinfoPath)
}

func resolveAccel(a Accel, kvmPath, cpuinfo string) Accel {
	if a != AccelAuto && a != "" {
		return a
	}
	if kvmUsable(kvmPath) && !runningNested(cpuinfo) {
		return AccelKVM
	}
	return AccelTCG
}

// kvmUsable reports whether path opens read-write.
func kvmUsable(path string) bool {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// runningNested reports whether any "flags" line of the cpuinfo file lists the
// "hypervisor" flag, which CPUID sets when this OS itself runs in a VM. An
// unreadable file counts as nested: the safe answer is TCG.
func runningNested(cpuinfo string) bool {
	f, err := os.Open(cpuinfo)
	if err != nil {
		return true
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, flag := range strings.Fields(val) {
			if flag == "hypervisor" {
				return true
			}
		}
	}
	return sc.Err() != nil
}
