package integration

import (
	"fmt"
	"time"
)

// Every shim config key the end-to-end tests rely on is written here and
// nowhere else (configs/cc.toml documents them).
//
// defaultShimConfig is the body every test starts from: empty, so the
// shim uses its defaults, which find the guest that `make guest` built in
// build/guest.
const defaultShimConfig = ""

// registryConfig returns the shim config body that lets the guest reach
// the test registry at addr (a host loopback "ip:port") over plain HTTP,
// and the other host addresses in more (e.g. a KBS) over TCP, all through
// network.forwards. mode is network.mode: "" for the shim's default
// ("user": QEMU guestfwd, or "none" under COFFER_VMM=cloud-hypervisor,
// see harness.ShimConfig), "none" for forwards over the agent transport.
func registryConfig(mode, addr string, more ...string) string {
	fwd := fmt.Sprintf("%q", addr)
	for _, m := range more {
		fwd += fmt.Sprintf(", %q", m)
	}
	net := "[network]\n"
	if mode != "" {
		net += fmt.Sprintf("mode = %q\n", mode)
	}
	return fmt.Sprintf("%sforwards = [%s]\n\n[registry]\ninsecure = [%q]\n", net, fwd, addr)
}

// simTEEConfig returns a shim config body for the sim TEE with the chain
// in chainDir, retrying an unreachable KBS for at most deadline.
func simTEEConfig(chainDir string, deadline time.Duration) string {
	return fmt.Sprintf("[hypervisor]\ntee = \"sim\"\n\n[attestation]\nsim_chain_dir = %q\ndeadline = %q\n", chainDir, deadline.String())
}

// memoryConfig returns a shim config body that gives the guest mib MiB
// of RAM.
func memoryConfig(mib int) string {
	return fmt.Sprintf("[hypervisor]\nmemory_mib = %d\n", mib)
}

// kernelConfig returns a shim config body that boots the guest kernel at
// path.
func kernelConfig(path string) string {
	return fmt.Sprintf("[hypervisor]\nkernel_path = %q\n", path)
}

// kernelCmdlineConfig returns a shim config body that boots the guest
// with cmdline instead of the guest build's default command line.
func kernelCmdlineConfig(cmdline string) string {
	return fmt.Sprintf("[hypervisor]\nkernel_cmdline = %q\n", cmdline)
}

// bootTimeoutConfig returns a shim config body that gives the agent
// timeout (a Go duration such as "90s") to answer after the VM started.
func bootTimeoutConfig(timeout time.Duration) string {
	return fmt.Sprintf("[agent]\nboot_timeout = %q\n", timeout.String())
}

// initDataConfig returns a shim config body that gives pods without an
// init-data annotation the init-data file at path.
func initDataConfig(path string) string {
	return fmt.Sprintf("[attestation]\ninit_data = %q\n", path)
}
