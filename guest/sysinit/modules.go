package sysinit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ModuleListName is the file in /lib/modules/<release> listing the modules
// to load, one path per line relative to that directory, dependencies first;
// blank lines and lines starting with '#' are ignored. guest/build writes it.
const ModuleListName = "coffer.load"

// ModuleResult is the outcome of loading one module.
type ModuleResult struct {
	// Path is the module file as listed ("kernel/fs/configfs/configfs.ko").
	Path string
	// Err is nil when the module was loaded, was already loaded (EEXIST), or
	// found no device (NoDevice).
	Err error
	// NoDevice is true when the module's init returned ENODEV: the driver
	// is for hardware this VM does not have, such as sev-guest outside an
	// SEV-SNP guest or tdx-guest outside a TDX guest. The kernel unloads
	// such a module again; this is not a failure.
	NoDevice bool
}

// Name returns the module's name as /proc/modules spells it: the file name
// without ".ko", with '-' replaced by '_' ("sev-guest.ko" → "sev_guest").
func (r ModuleResult) Name() string {
	return strings.ReplaceAll(strings.TrimSuffix(filepath.Base(r.Path), ".ko"), "-", "_")
}

// readModuleList parses a ModuleListName file.
func readModuleList(p string) ([]string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var paths []string
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		paths = append(paths, line)
	}
	return paths, s.Err()
}

// loadModules loads the modules listed in dir/ModuleListName in order with
// load (finitModule in the guest). A module that fails does not stop the
// others; its error is in its result. The returned error is for a missing or
// unreadable list.
func loadModules(dir string, load func(path string) error) ([]ModuleResult, error) {
	list := filepath.Join(dir, ModuleListName)
	paths, err := readModuleList(list)
	if err != nil {
		return nil, fmt.Errorf("read module list: %w: is this a guest built by `ccctl guest build` for this kernel?", err)
	}
	results := make([]ModuleResult, 0, len(paths))
	for _, p := range paths {
		results = append(results, moduleResult(p, load(filepath.Join(dir, p))))
	}
	return results, nil
}

// moduleResult classifies the error of loading the module listed as p:
// EEXIST (already loaded) is success, ENODEV (no device for the driver) is
// NoDevice, anything else is a failure naming the module.
func moduleResult(p string, err error) ModuleResult {
	switch {
	case err == nil, errors.Is(err, unix.EEXIST):
		return ModuleResult{Path: p}
	case errors.Is(err, unix.ENODEV):
		return ModuleResult{Path: p, NoDevice: true}
	default:
		return ModuleResult{Path: p, Err: fmt.Errorf("load module %s: %w", p, err)}
	}
}

// finitModule loads the uncompressed module file p with finit_module(2).
// guest/build stores modules uncompressed, so no
// MODULE_INIT_COMPRESSED_FILE flag (and no CONFIG_MODULE_DECOMPRESS) is
// needed.
func finitModule(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("open module: %w", err)
	}
	defer f.Close()
	return unix.FinitModule(int(f.Fd()), "", 0)
}

// noDeviceModules returns the names of the results with NoDevice set.
func noDeviceModules(results []ModuleResult) []string {
	var names []string
	for _, r := range results {
		if r.NoDevice {
			names = append(names, r.Name())
		}
	}
	return names
}
