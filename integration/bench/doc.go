// Package bench measures Coffer's start-up cost and memory footprint for
// `make bench` (docs/performance.md): the time from `ctr run` to a
// container's first output line, split into phases from the shim's log,
// containerd's task events and the guest's serial console; the bare-VM
// floor (the same kernel and QEMU command line with an /init that powers
// off at once); and the peak RSS of the shim, QEMU and cc-agent.
//
// It drives real processes: a containerd and registry that the caller
// started (scripts/bench.sh does), build/bin/ctr, and QEMU. Benchmarks
// never run as pass/fail tests; this package's tests cover only the
// parsing and the arithmetic.
package bench
