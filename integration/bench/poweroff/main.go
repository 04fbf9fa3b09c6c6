//go:build linux

// Command poweroff is the /init of the bare-VM floor that `make bench`
// measures (package bench): it prints one line on the console, which
// proves the kernel booted as far as running init, and powers the VM off
// at once with reboot(LINUX_REBOOT_CMD_POWER_OFF), which ends QEMU. Build
// it static: CGO_ENABLED=0 go build -ldflags '-s -w'.
package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

func main() {
	// The kernel opens /dev/console as init's stdin, stdout and stderr.
	fmt.Fprintln(os.Stdout, "coffer-floor: init reached, powering off")
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Only reached on failure; init exiting makes the kernel panic, and the
	// bench reports the panic it finds on the console.
	fmt.Fprintf(os.Stderr, "coffer-floor: reboot(LINUX_REBOOT_CMD_POWER_OFF): %v\n", err)
	os.Exit(1)
}
