package sysinit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestLoadModulesClassifiesErrors loads a module list through a fake
// finit_module and checks how each kernel answer is reported: EEXIST is
// success, ENODEV is "no device" (not a failure), anything else fails with
// the module's path.
func TestLoadModulesClassifiesErrors(t *testing.T) {
	dir := t.TempDir()
	list := "# load order\n" +
		"kernel/fs/configfs/configfs.ko\n" +
		"kernel/drivers/virt/coco/tsm.ko\n" +
		"kernel/drivers/virt/coco/sev-guest/sev-guest.ko\n" +
		"kernel/drivers/virt/coco/tdx-guest/tdx-guest.ko\n" +
		"kernel/fs/overlayfs/overlay.ko\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, ModuleListName), []byte(list), 0o644))
	answers := map[string]error{
		"configfs.ko":  nil,
		"tsm.ko":       unix.EEXIST,
		"sev-guest.ko": unix.ENODEV,
		"tdx-guest.ko": fmt.Errorf("wrapped: %w", unix.ENODEV),
		"overlay.ko":   unix.ENOEXEC,
	}
	var order []string
	results, err := loadModules(dir, func(p string) error {
		require.True(t, strings.HasPrefix(p, dir+"/"), "load got %s, outside the module dir", p)
		order = append(order, filepath.Base(p))
		return answers[filepath.Base(p)]
	})
	require.NoError(t, err)
	require.Equal(t, []string{"configfs.ko", "tsm.ko", "sev-guest.ko", "tdx-guest.ko", "overlay.ko"}, order, "modules must load in list order")
	require.Len(t, results, 5)

	require.Equal(t, ModuleResult{Path: "kernel/fs/configfs/configfs.ko"}, results[0])
	require.Equal(t, ModuleResult{Path: "kernel/drivers/virt/coco/tsm.ko"}, results[1])
	require.Equal(t, ModuleResult{Path: "kernel/drivers/virt/coco/sev-guest/sev-guest.ko", NoDevice: true}, results[2])
	require.True(t, results[3].NoDevice)
	require.NoError(t, results[3].Err)
	require.False(t, results[4].NoDevice)
	require.ErrorIs(t, results[4].Err, unix.ENOEXEC)
	require.ErrorContains(t, results[4].Err, "load module kernel/fs/overlayfs/overlay.ko")

	require.Equal(t, []string{"sev_guest", "tdx_guest"}, noDeviceModules(results))
	info := &Info{KernelRelease: "6.12.117+deb12-cloud-amd64", Modules: results}
	require.Len(t, info.FailedModules(), 1)
	require.Equal(t, "kernel 6.12.117+deb12-cloud-amd64, 5 modules (1 failed, 2 without device)", info.String())
}

func TestLoadModulesMissingList(t *testing.T) {
	_, err := loadModules(filepath.Join(t.TempDir(), "missing"), func(string) error {
		t.Fatal("load called without a module list")
		return nil
	})
	require.ErrorContains(t, err, "read module list")
	require.ErrorContains(t, err, "ccctl guest build")
}

func TestModuleResultName(t *testing.T) {
	for path, want := range map[string]string{
		"kernel/drivers/virt/coco/sev-guest/sev-guest.ko":    "sev_guest",
		"kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko": "vmw_vsock_virtio_transport",
		"kernel/drivers/virt/coco/tsm.ko":                    "tsm",
	} {
		require.Equal(t, want, ModuleResult{Path: path}.Name(), path)
	}
}
