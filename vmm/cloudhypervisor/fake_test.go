package cloudhypervisor

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeModeEnv makes the test binary act as a fake cloud-hypervisor (see
// TestMain) with the named behaviour:
//
//	serve        serve the API; vmm.shutdown exits 0
//	exit         print an error to stderr and exit 1 at once
//	fail-boot    like serve, but vm.boot answers 500 with Cloud Hypervisor's text
//	fail-add-net like serve, but vm.add-net answers 500 as for a file that is no tap
//	deaf         like serve, but vmm.shutdown answers 204 and does not exit
const fakeModeEnv = "COFFER_TEST_FAKE_CLH"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeModeEnv); mode != "" {
		os.Exit(fakeCLH(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// addNetErrorBody is the fake's answer to a refused vm.add-net, worded
// like Cloud Hypervisor's error chain.
const addNetErrorBody = "Error from API: The new device could not be added to the VM: Error creating virtio-net device: Error getting tap interface flags"

// fakeRecordName is the file in the state directory (the API socket's
// directory) where the fake cloud-hypervisor records what it was given.
const fakeRecordName = "fake-clh.json"

// fakeRecord is what the fake cloud-hypervisor writes to fakeRecordName
// after every call: the network namespace it runs in, the calls in order,
// the vm.create and vm.add-net bodies, and the taps that came with
// vm.add-net as SCM_RIGHTS.
type fakeRecord struct {
	NetNS  uint64          `json:"netns"`
	Calls  []string        `json:"calls"`
	Create json.RawMessage `json:"create,omitempty"`
	AddNet json.RawMessage `json:"add_net,omitempty"`
	Taps   []tapFacts      `json:"taps,omitempty"`
}

// readFakeRecord reads the fake's record from stateDir.
func readFakeRecord(t *testing.T, stateDir string) *fakeRecord {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, fakeRecordName))
	require.NoError(t, err, "the fake cloud-hypervisor's record")
	var r fakeRecord
	require.NoError(t, json.Unmarshal(b, &r))
	return &r
}

// fakeCLH implements the part of cloud-hypervisor that CloudHypervisor
// drives: --api-socket path=P, vmm.ping, vm.create, vm.add-net (with tap
// descriptors over SCM_RIGHTS), vm.boot, vmm.shutdown. It records what it
// got in <dir of P>/fake-clh.json (fakeRecord).
func fakeCLH(mode string, args []string) int {
	if mode == "exit" {
		fmt.Fprintln(os.Stderr, "Error parsing config: Error parsing --api-socket: unknown option")
		return 1
	}
	if len(args) != 2 || args[0] != "--api-socket" || !strings.HasPrefix(args[1], "path=") {
		fmt.Fprintf(os.Stderr, "fake cloud-hypervisor: unexpected arguments %q\n", args)
		return 2
	}
	sock := strings.TrimPrefix(args[1], "path=")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	rec := &fakeRecord{}
	if rec.NetNS, err = ownNetNS(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	recPath := filepath.Join(filepath.Dir(sock), fakeRecordName)
	save := func() {
		b, _ := json.Marshal(rec)
		if err := os.WriteFile(recPath, b, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	var kept []*os.File // the taps, held like Cloud Hypervisor holds them
	created := false
	done := make(chan int, 1)
	srv := withConnContext(&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		files := receivedFiles(r)
		body, _ := io.ReadAll(r.Body)
		rec.Calls = append(rec.Calls, r.Method+" "+r.URL.Path)
		defer save()
		switch r.URL.Path {
		case "/api/v1/vmm.ping":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"version":"v48.0-fake","pid":%d}`, os.Getpid())
		case "/api/v1/vm.create":
			created = true
			rec.Create = body
			w.WriteHeader(http.StatusNoContent)
		case "/api/v1/vm.add-net":
			switch {
			case !created:
				w.WriteHeader(http.StatusNotFound)
			case len(files) == 0 || mode == "fail-add-net":
				w.WriteHeader(http.StatusInternalServerError)
				fmt.Fprint(w, addNetErrorBody)
			default:
				rec.AddNet = body
				for _, f := range files {
					rec.Taps = append(rec.Taps, describeTap(f))
				}
				kept = append(kept, files...)
				w.WriteHeader(http.StatusNoContent)
			}
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
			save()
			w.WriteHeader(http.StatusNoContent)
			if mode != "deaf" {
				w.(http.Flusher).Flush()
				os.Exit(0)
			}
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	})})
	srv.Serve(fdListener{l})
	return <-done
}
