package harness

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/cofferhq/coffer/attestation/sim"
	"github.com/cofferhq/coffer/kbs/admin"
	"github.com/cofferhq/coffer/kbs/adminclient"
	"github.com/cofferhq/coffer/kbs/refvalues"
)

// kbsStartTimeout bounds how long StartKBS waits for cc-kbs to serve TLS.
const kbsStartTimeout = 20 * time.Second

// KBS is a cc-kbs process on 127.0.0.1 serving HTTPS with its generated
// certificate, trusting a freshly generated sim TEE chain, with an admin
// key the test holds.
type KBS struct {
	addr     string
	dataDir  string
	logPath  string
	config   string
	simDir   string
	certPEM  []byte
	adminKey ed25519.PrivateKey
	keyFile  string
	admin    *adminclient.Client
	bin      string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartKBS generates a sim chain (SimChainDir), an admin key pair and a
// config, then starts cc-kbs from BinDir on a free 127.0.0.1 port and waits
// until it completes a TLS handshake. t.Cleanup stops it (and logs its
// output tail when the test failed). The test fails if any step does.
func StartKBS(t testing.TB) *KBS {
	t.Helper()
	bin, err := binary("cc-kbs")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	k := &KBS{dataDir: filepath.Join(dir, "data"), simDir: filepath.Join(dir, "sim"), logPath: filepath.Join(dir, "cc-kbs.log"), bin: bin}
	signer, err := sim.Generate(sim.GenerateOptions{})
	if err != nil {
		t.Fatalf("generate sim chain: %v", err)
	}
	if err := signer.WriteDir(k.simDir); err != nil {
		t.Fatal(err)
	}
	privPEM, pubPEM, err := admin.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if k.adminKey, err = admin.ParsePrivateKey(privPEM); err != nil {
		t.Fatal(err)
	}
	k.keyFile = filepath.Join(dir, "admin.key")
	if err := os.WriteFile(k.keyFile, privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pubPath := filepath.Join(dir, "admin.pub")
	if err := os.WriteFile(pubPath, pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	k.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	k.config = filepath.Join(dir, "cc-kbs.toml")
	cfg := fmt.Sprintf("listen = %q\ndata_dir = %q\n\n[admin]\npublic_key = %q\n\n[tee.sim]\nroot_pem = %q\n",
		k.addr, k.dataDir, pubPath, filepath.Join(k.simDir, sim.RootFile))
	if err := os.WriteFile(k.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cc-kbs %s log tail (%s):\n%s", k.addr, k.logPath, tailFile(k.logPath, 40))
		}
		k.Stop()
	})
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	if k.certPEM, err = os.ReadFile(filepath.Join(k.dataDir, "tls.crt")); err != nil {
		t.Fatalf("read cc-kbs certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(k.certPEM)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	k.admin = adminclient.New(k.URL(), k.adminKey, adminclient.Options{HTTPClient: hc, Subject: "integration-test"})
	return k
}

// Start (re)starts the cc-kbs process, keeping its data directory, and
// waits until it serves TLS. It is an error if it is already running.
func (k *KBS) Start() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cmd != nil {
		select {
		case <-k.exited:
		default:
			return errors.New("start cc-kbs: already running")
		}
	}
	logFile, err := os.OpenFile(k.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open cc-kbs log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(k.bin, "--config", k.config)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", k.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	k.cmd, k.exited = cmd, exited
	deadline := time.Now().Add(kbsStartTimeout)
	for {
		select {
		case <-exited:
			return fmt.Errorf("cc-kbs exited before serving (%v); log:\n%s", cmd.ProcessState, tailFile(k.logPath, 20))
		default:
		}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", k.addr, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cc-kbs not serving TLS on %s after %s: %w; log:\n%s", k.addr, kbsStartTimeout, err, tailFile(k.logPath, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills cc-kbs (SIGKILL to its process group) and waits for it, so
// connections to Addr are refused. Idempotent; Start brings it back.
func (k *KBS) Stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cmd == nil {
		return
	}
	_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
	<-k.exited
}

// Addr is "127.0.0.1:<port>".
func (k *KBS) Addr() string { return k.addr }

// URL is "https://127.0.0.1:<port>".
func (k *KBS) URL() string { return "https://" + k.addr }

// CertPEM is the KBS's TLS certificate (PEM), for init-data to pin.
func (k *KBS) CertPEM() []byte { return k.certPEM }

// SimChainDir is the sim TEE chain the KBS trusts (for the shim's
// attestation.sim_chain_dir).
func (k *KBS) SimChainDir() string { return k.simDir }

// Admin is an admin API client for this KBS.
func (k *KBS) Admin() *adminclient.Client { return k.admin }

// AdminKeyFile is the Ed25519 admin private key (PKCS #8 PEM), for
// `ccctl kbs --admin-key` and `ccctl image encrypt --admin-key`.
func (k *KBS) AdminKeyFile() string { return k.keyFile }

// CertFile is the KBS's TLS certificate file (PEM), for --kbs-cert.
func (k *KBS) CertFile() string { return filepath.Join(k.dataDir, "tls.crt") }

// AdminKey is the Ed25519 admin private key.
func (k *KBS) AdminKey() ed25519.PrivateKey { return k.adminKey }

// LogPath is the file receiving cc-kbs's output.
func (k *KBS) LogPath() string { return k.logPath }

// TrustMeasurement adds a reference value, failing the test on error.
func (k *KBS) TrustMeasurement(t testing.TB, tee, measurement string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := k.admin.AddReferenceValue(ctx, refvalues.Entry{TEE: tee, Measurement: measurement}); err != nil {
		t.Fatalf("add KBS reference value %s %s: %v", tee, measurement, err)
	}
}

// SetResource stores value at path ("repo/type/tag"), failing the test on
// error.
func (k *KBS) SetResource(t testing.TB, path string, value []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := k.admin.SetResource(ctx, path, value); err != nil {
		t.Fatalf("set KBS resource %s: %v", path, err)
	}
}

// Ccctl runs build/bin/ccctl with args and returns its stdout; a failure
// carries both outputs.
func Ccctl(ctx context.Context, args ...string) (string, error) {
	bin, err := binary("ccctl")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("ccctl %s: %w\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// DefaultResourcePolicy is cc-kbs's shipped resource policy
// (configs/kbs/resource.rego), to restore it after a test changed it.
func DefaultResourcePolicy(t testing.TB) []byte {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "configs", "kbs", "resource.rego"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
