package sysinit

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mount is one file system sysinit mounts.
type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// earlyMounts returns what the agent and runc need before anything else:
// devtmpfs for device nodes such as /dev/vport0p1, proc and sysfs.
func earlyMounts() []mount {
	return []mount{
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	}
}

// cgroupMount is the unified cgroup hierarchy runc needs ("no cgroup mount
// found in mountinfo" without it). runc enables the controllers it needs in
// the root cgroup.subtree_control itself.
func cgroupMount() mount {
	return mount{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RELATIME, ""}
}

// configfsMount is where configfs-tsm (/sys/kernel/config/tsm/report)
// lives: the kernel interface SNP and TDX guests use for attestation
// reports on Linux 6.7 and later. The mount point exists only once configfs
// is registered, so with configfs as a module (the Debian cloud kernel) it
// is mounted after the modules are loaded.
func configfsMount() mount {
	return mount{"configfs", "/sys/kernel/config", "configfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""}
}

// do mounts m, creating the target directory if needed. EBUSY, which mount(2)
// returns when the same file system is already mounted at the target, counts
// as success.
func (m mount) do() error {
	if err := os.MkdirAll(m.target, 0o755); err != nil {
		return fmt.Errorf("create mount point for %s: %w", m.fstype, err)
	}
	err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data)
	if err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
	}
	return nil
}

// mountEarly mounts /dev, /proc and /sys.
func mountEarly() error {
	for _, m := range earlyMounts() {
		if err := m.do(); err != nil {
			return err
		}
	}
	return nil
}
