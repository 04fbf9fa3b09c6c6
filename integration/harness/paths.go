package harness

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

const (
	// EnvBinDir names the environment variable that overrides the directory
	// holding the built binaries (default <repo>/build/bin).
	EnvBinDir = "COFFER_BIN_DIR"
	// EnvRequireE2E names the environment variable that turns missing
	// binaries or guest files into test failures instead of skips. CI sets
	// it; any non-empty value counts.
	EnvRequireE2E = "COFFER_REQUIRE_E2E"
)

// RepoRoot returns the repository root: the nearest directory at or above
// the working directory that holds a go.mod file. go test runs a test with
// the package directory as its working directory, so from integration/ or
// integration/harness this is the Coffer checkout.
//
// It returns an error wrapping fs.ErrNotExist when no parent holds go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("get working directory: %w", err)
	}
	for start := dir; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find repository root: no go.mod in %s or any parent: %w", start, fs.ErrNotExist)
		}
		dir = parent
	}
}

// BinDir returns the directory holding the built binaries: $COFFER_BIN_DIR
// when set, else <repo>/build/bin (filled by `make tools build`). It need not
// exist; use MissingFiles to check for the binaries in it.
func BinDir() (string, error) {
	if d := os.Getenv(EnvBinDir); d != "" {
		return filepath.Abs(d)
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "build", "bin"), nil
}

// GuestDir returns <repo>/build/guest, where `make guest` puts the guest
// kernel, initrd and manifest.json.
func GuestDir() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "build", "guest"), nil
}

// MissingFiles returns those of paths that do not exist (or cannot be
// stat'ed), in the order given; nil when all exist.
func MissingFiles(paths ...string) []string {
	var missing []string
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	return missing
}

// RequireE2E reports whether $COFFER_REQUIRE_E2E is set (non-empty).
func RequireE2E() bool { return os.Getenv(EnvRequireE2E) != "" }

// RequireBinaries returns the binary directory (see BinDir) after checking
// that every named binary exists in it. When some are missing it skips the
// test, naming the missing files and the make target that builds them, or
// fails it when $COFFER_REQUIRE_E2E is set (CI must not skip silently).
func RequireBinaries(t testing.TB, names ...string) string {
	t.Helper()
	dir, err := BinDir()
	if err != nil {
		t.Fatalf("locate binaries: %v", err)
	}
	paths := make([]string, len(names))
	for i, n := range names {
		paths[i] = filepath.Join(dir, n)
	}
	if missing := MissingFiles(paths...); len(missing) > 0 {
		msg := fmt.Sprintf("missing binaries %v: run `make tools build` in the repository root (or set %s)", missing, EnvBinDir)
		if RequireE2E() {
			t.Fatalf("%s; %s is set, so this is a failure", msg, EnvRequireE2E)
		}
		t.Skip(msg)
	}
	return dir
}

// binary returns the absolute path of a binary in BinDir, or an error
// naming the path and the make target when it is missing.
func binary(name string) (string, error) {
	dir, err := BinDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("find binary %s: %w (run `make tools build` in the repository root or set %s)", p, err, EnvBinDir)
		}
		return "", fmt.Errorf("find binary %s: %w", p, err)
	}
	return p, nil
}
