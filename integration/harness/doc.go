// Package harness is Coffer's end-to-end test harness: it runs the real
// binaries built by the Makefile (a distribution v3 registry, containerd,
// ctr and containerd-shim-cc-v2) as child processes of a Go test, builds
// test images in Go with go-containerregistry, and checks that a container
// leaves nothing behind on the host (QEMU processes, mounts, sockets).
//
// Every Start* function takes a testing.TB, registers its own t.Cleanup
// and, when the test failed, dumps the tail of the process's log. Each test
// gets its own containerd (root, state and socket under a short temp dir)
// and its own containerd namespace, derived from t.Name() plus random
// characters, so tests never see each other's images or containers.
//
// The model is firecracker-containerd's internal/integtest and Contrast's
// e2e/internal/contrasttest (a namespace per test, a debug dump on failure).
//
// Binaries (from `make tools build`) are looked up in $COFFER_BIN_DIR, else
// in <repo>/build/bin, where <repo> is the nearest parent of the working
// directory holding go.mod.
package harness
