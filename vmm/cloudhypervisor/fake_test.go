package cloudhypervisor

import (
	"os"
	"testing"

	"github.com/cofferhq/coffer/vmm/cloudhypervisor/clhtest"
)

// TestMain lets this test binary act as a fake cloud-hypervisor
// (clhtest.ModeEnv, see fakeVM).
func TestMain(m *testing.M) {
	clhtest.Main()
	os.Exit(m.Run())
}
