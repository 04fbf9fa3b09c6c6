package cloudhypervisor

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
)

// fakeModeEnv makes the test binary act as a fake cloud-hypervisor (see
// TestMain) with the named behaviour:
//
//	serve        serve the API; vmm.shutdown exits 0
//	exit         print an error to stderr and exit 1 at once
//	fail-boot    like serve, but vm.boot answers 500 with Cloud Hypervisor's text
//	deaf         like serve, but vmm.shutdown answers 204 and does not exit
const fakeModeEnv = "COFFER_TEST_FAKE_CLH"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeModeEnv); mode != "" {
		os.Exit(fakeCLH(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeCLH implements the part of cloud-hypervisor that CloudHypervisor
// drives: --api-socket path=P, vmm.ping, vm.create, vm.boot, vmm.shutdown.
func fakeCLH(mode string, args []string) int {
	if mode == "exit" {
		fmt.Fprintln(os.Stderr, "Error parsing config: Error parsing --api-socket: unknown option")
		return 1
	}
	if len(args) != 2 || args[0] != "--api-socket" || !strings.HasPrefix(args[1], "path=") {
		fmt.Fprintf(os.Stderr, "fake cloud-hypervisor: unexpected arguments %q\n", args)
		return 2
	}
	l, err := net.Listen("unix", strings.TrimPrefix(args[1], "path="))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	created := false
	done := make(chan int, 1)
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/vmm.ping":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"version":"v48.0-fake","pid":%d}`, os.Getpid())
		case "/api/v1/vm.create":
			created = true
			w.WriteHeader(http.StatusNoContent)
		case "/api/v1/vm.boot":
			switch {
			case !created:
				w.WriteHeader(http.StatusNotFound)
			case mode == "fail-boot":
				fmt.Fprintln(os.Stderr, "cloud-hypervisor: Error booting VM: failed to open /dev/kvm")
				w.WriteHeader(http.StatusInternalServerError)
				fmt.Fprint(w, clhErrorBody)
			default:
				w.WriteHeader(http.StatusNoContent)
			}
		case "/api/v1/vmm.shutdown":
			w.WriteHeader(http.StatusNoContent)
			if mode != "deaf" {
				w.(http.Flusher).Flush()
				os.Exit(0)
			}
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	return <-done
}
