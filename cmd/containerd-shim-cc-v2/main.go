// Command containerd-shim-cc-v2 is the containerd runtime shim for
// io.containerd.cc.v2: one confidential VM per pod.
package main

import (
	"context"
	"os"

	cshim "github.com/containerd/containerd/v2/pkg/shim"

	"github.com/cofferhq/coffer/shim"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == shim.ForwardCommand {
		os.Exit(shim.Forward(os.Args[2]))
	}
	shim.Register()
	// The shim's only child is QEMU, which vmm/qemu waits for itself: the
	// default reaper would steal its exit status, and a subreaper would
	// collect QEMU's detached guestfwd helpers as zombies.
	cshim.RunShim(context.Background(), shim.NewManager(), func(c *cshim.Config) {
		c.NoReaper = true
		c.NoSubreaper = true
	})
}
