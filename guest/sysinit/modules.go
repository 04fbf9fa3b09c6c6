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
	// Path is the module file as listed ("kernel/drivers/virtio/virtio.ko").
	Path string
	// Err is nil when the module was loaded or was already loaded (EEXIST).
	Err error
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
// finit_module(2). A module that fails does not stop the others; its error is
// in its result. The returned error is for a missing or unreadable list.
func loadModules(dir string) ([]ModuleResult, error) {
	list := filepath.Join(dir, ModuleListName)
	paths, err := readModuleList(list)
	if err != nil {
		return nil, fmt.Errorf("read module list: %w: is this a guest built by `ccctl guest build` for this kernel?", err)
	}
	results := make([]ModuleResult, 0, len(paths))
	for _, p := range paths {
		results = append(results, ModuleResult{Path: p, Err: loadModule(filepath.Join(dir, p))})
	}
	return results, nil
}

func loadModule(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("open module: %w", err)
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", p, err)
	}
	return nil
}
