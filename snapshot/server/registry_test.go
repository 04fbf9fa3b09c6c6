package server_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testRegistry is a distribution registry (build/bin/registry) serving
// plain HTTP on 127.0.0.1 from a test temp dir.
type testRegistry struct {
	addr string
}

// startRegistry starts `registry serve` from binDir on a free port and waits
// until GET /v2/ answers 200 (20 s at most); the process group is killed
// when the test ends.
func startRegistry(t *testing.T, binDir string) *testRegistry {
	t.Helper()
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	require.NoError(t, l.Close())
	secret := make([]byte, 16)
	_, err = rand.Read(secret)
	require.NoError(t, err)
	config := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %q\nhttp:\n  addr: %q\n  secret: %q\n",
		filepath.Join(dir, "storage"), addr, hex.EncodeToString(secret))
	configPath := filepath.Join(dir, "config.yml")
	require.NoError(t, os.WriteFile(configPath, []byte(config), 0o644))
	logPath := filepath.Join(dir, "registry.log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	defer logFile.Close()

	cmd := exec.Command(filepath.Join(binDir, "registry"), "serve", configPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// No OpenTelemetry collector here: do not try to export traces.
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("registry log (%s):\n%s", logPath, b)
		}
	})

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("registry exited before serving %s; see %s", addr, logPath)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		resp, err := client.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return &testRegistry{addr: addr}
			}
		}
		require.True(t, time.Now().Before(deadline), "registry not serving %s after 20 s: %v", addr, err)
		time.Sleep(50 * time.Millisecond)
	}
}

// repoRoot returns the nearest directory at or above the working directory
// holding go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, dir, parent, "no go.mod above the working directory")
		dir = parent
	}
}
