package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// registryStartTimeout bounds how long StartRegistry waits for GET /v2/.
const registryStartTimeout = 20 * time.Second

// Registry is a distribution v3 registry (`registry serve`) listening on
// plain HTTP at 127.0.0.1:<port>, storing blobs in a test temp dir, with no
// authentication and with manifest deletion enabled.
type Registry struct {
	addr    string
	rootDir string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}

	stopOnce sync.Once
}

// StartRegistry starts `registry serve <config.yml>` from BinDir with a
// generated config (filesystem storage under t.TempDir(), HTTP on a free
// 127.0.0.1 port, log level warn, deletes enabled) and waits until
// GET http://<addr>/v2/ answers 200. The registry runs in its own process
// group, which t.Cleanup kills; when the test failed, cleanup first logs
// the tail of the registry's output.
//
// The test fails (t.Fatal) if the binary is missing or the registry does
// not answer within 20 s.
func StartRegistry(t testing.TB) *Registry {
	t.Helper()
	return startRegistryOn(t, "127.0.0.1")
}

// StartRegistryAllInterfaces is StartRegistry listening on every
// interface (0.0.0.0), so a guest on a pod network reaches it at the
// network's gateway: name images AddrOn(gateway)/... . Addr still
// returns the 127.0.0.1 address.
func StartRegistryAllInterfaces(t testing.TB) *Registry {
	t.Helper()
	return startRegistryOn(t, "0.0.0.0")
}

func startRegistryOn(t testing.TB, listen string) *Registry {
	t.Helper()
	bin, err := binary("registry")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// A port picked by listening on :0 can be taken by someone else before
	// the registry binds it; try a few ports before giving up.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		r, err := startRegistry(bin, dir, attempt, listen)
		if err == nil {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("registry %s log tail (%s):\n%s", r.addr, r.logPath, tailFile(r.logPath, 50))
				}
				r.Stop()
			})
			return r
		}
		lastErr = err
	}
	t.Fatalf("start registry: %v", lastErr)
	return nil
}

func startRegistry(bin, dir string, attempt int, listen string) (*Registry, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	listenAddr := net.JoinHostPort(listen, strconv.Itoa(port))
	storage := filepath.Join(dir, "storage")
	if err := os.MkdirAll(storage, 0o755); err != nil {
		return nil, fmt.Errorf("create registry storage: %w", err)
	}
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("generate registry http secret: %w", err)
	}
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
http:
  addr: %q
  secret: %q
`, storage, listenAddr, hex.EncodeToString(secret))
	configPath := filepath.Join(dir, fmt.Sprintf("config-%d.yml", attempt))
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		return nil, fmt.Errorf("write registry config: %w", err)
	}
	logPath := filepath.Join(dir, fmt.Sprintf("registry-%d.log", attempt))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create registry log: %w", err)
	}
	defer logFile.Close()

	cmd := exec.Command(bin, "serve", configPath)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// distribution v3 exports OpenTelemetry traces to localhost:4318 by
	// default and logs every failed export; there is no collector here.
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	r := &Registry{addr: addr, rootDir: storage, logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(r.exited)
	}()
	if err := r.waitReady(registryStartTimeout); err != nil {
		r.Stop()
		return nil, err
	}
	return r, nil
}

// waitReady polls GET /v2/ until it answers 200, the process exits, or the
// timeout passes.
func (r *Registry) waitReady(timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	url := "http://" + r.addr + "/v2/"
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-r.exited:
			return fmt.Errorf("registry exited before serving %s (%v); log:\n%s", url, r.cmd.ProcessState, tailFile(r.logPath, 20))
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			lastErr = fmt.Errorf("GET %s answered %s, want 200 OK", url, resp.Status)
		} else {
			lastErr = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("registry not ready after %s: %w; log:\n%s", timeout, lastErr, tailFile(r.logPath, 20))
}

// AddrOn returns "<ip>:<port>" with the registry's port, for a registry
// started with StartRegistryAllInterfaces.
func (r *Registry) AddrOn(ip string) string {
	_, port, _ := net.SplitHostPort(r.addr)
	return net.JoinHostPort(ip, port)
}

// Addr returns the registry's listen address, "127.0.0.1:<port>"; image
// references in it look like "127.0.0.1:<port>/busybox:latest".
func (r *Registry) Addr() string { return r.addr }

// RootDir returns the root directory of the registry's filesystem storage
// driver (storage.filesystem.rootdirectory), under which distribution keeps
// docker/registry/v2/{blobs,repositories}.
func (r *Registry) RootDir() string { return r.rootDir }

// BlobPath returns the file in which the registry stores the blob with
// digest "sha256:<64 hex>": <RootDir>/docker/registry/v2/blobs/sha256/
// <first 2 hex>/<64 hex>/data (distribution's filesystem layout). The
// registry serves that file's bytes as they are, so changing them (keeping
// the size) makes it serve content that no longer matches the digest. It
// returns an error for a digest that is not sha256 with 64 lowercase hex
// digits, or when the file does not exist (the blob was never pushed).
func (r *Registry) BlobPath(digest string) (string, error) {
	hexPart, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hexPart) != 64 || strings.Trim(hexPart, "0123456789abcdef") != "" {
		return "", fmt.Errorf("locate registry blob %q: want \"sha256:\" and 64 lowercase hex digits", digest)
	}
	p := filepath.Join(r.rootDir, "docker", "registry", "v2", "blobs", "sha256", hexPart[:2], hexPart, "data")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("locate registry blob %s: %w (was it pushed to %s?)", digest, err, r.addr)
	}
	return p, nil
}

// LogPath returns the path of the file receiving the registry's output.
func (r *Registry) LogPath() string { return r.logPath }

// Stop kills the registry's process group (SIGKILL) and waits for it to
// exit, so later requests to Addr are refused. It is idempotent and is also
// called by t.Cleanup.
func (r *Registry) Stop() {
	r.stopOnce.Do(func() {
		if err := syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			_ = r.cmd.Process.Kill()
		}
		<-r.exited
	})
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port on 127.0.0.1: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
