package daemon

import (
	"bytes"
	"context"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/sim"
	"github.com/cofferhq/coffer/kbs/admin"
	"github.com/cofferhq/coffer/kbs/adminclient"
	"github.com/cofferhq/coffer/kbs/client"
	"github.com/cofferhq/coffer/kbs/config"
	"github.com/cofferhq/coffer/kbs/refvalues"
)

type simAttester struct{ s *sim.Signer }

var measurement = bytes.Repeat([]byte{0x5a}, 48)

func (simAttester) TEE() attestation.TEE { return attestation.TEESim }
func (a simAttester) Evidence(_ context.Context, rd []byte) ([]byte, error) {
	return a.s.Evidence(sim.ReportOptions{ReportData: rd, Measurement: measurement})
}

// syncBuffer is an io.Writer safe for the daemon goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs the daemon until the returned stop is called.
func start(t *testing.T, cfg config.Config, insecure bool) (addr string, out *syncBuffer, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out = &syncBuffer{}
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, InsecureHTTP: insecure, Out: out, Ready: func(a net.Addr) { ready <- a }})
	}()
	select {
	case a := <-ready:
		addr = a.String()
	case err := <-done:
		cancel()
		t.Fatalf("daemon exited early: %v\n%s", err, out.String())
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("daemon did not become ready")
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(15 * time.Second):
			t.Fatal("daemon did not shut down")
		}
	}
	t.Cleanup(stop)
	return addr, out, stop
}

var fpRE = regexp.MustCompile(`SHA-256 fingerprint ([0-9a-f]{64})`)

// TestRunTLSAndRestart starts cc-kbs as configured by default (TLS with a
// generated certificate), pins the printed fingerprint, runs the admin API
// and a sim handshake, restarts it on the same data_dir and checks the
// certificate, the token signing key and the stored state survived.
func TestRunTLSAndRestart(t *testing.T) {
	dir := t.TempDir()
	privPEM, pubPEM, err := admin.GenerateKey()
	require.NoError(t, err)
	pubPath := filepath.Join(dir, "admin.pub")
	require.NoError(t, os.WriteFile(pubPath, pubPEM, 0o644))
	priv, err := admin.ParsePrivateKey(privPEM)
	require.NoError(t, err)
	s, err := sim.Generate(sim.GenerateOptions{})
	require.NoError(t, err)
	rootPath := filepath.Join(dir, "sim-root.pem")
	require.NoError(t, os.WriteFile(rootPath, s.RootPEM(), 0o644))

	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Admin.PublicKey = pubPath
	cfg.TEE.Sim.RootPEM = rootPath
	require.NoError(t, cfg.Validate())

	addr, out, stop := start(t, cfg, false)
	m := fpRE.FindStringSubmatch(out.String())
	require.NotNil(t, m, "no fingerprint printed:\n%s", out.String())
	fp := m[1]
	require.Contains(t, out.String(), "generated TLS certificate")
	for _, f := range []string{"kbs.db", "tls.crt", "tls.key", "token-signing-key.pem"} {
		st, err := os.Stat(filepath.Join(cfg.DataDir, f))
		require.NoError(t, err, f)
		if f != "tls.crt" {
			require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
		}
	}

	ctx := context.Background()
	url := "https://" + addr
	hc, err := adminclient.NewHTTPClient(adminclient.HTTPClientOptions{PinSHA256: fp})
	require.NoError(t, err)
	ac := adminclient.New(url, priv, adminclient.Options{HTTPClient: hc})
	_, err = ac.SetResource(ctx, "default/key/app", []byte("persisted"))
	require.NoError(t, err)
	_, err = ac.AddReferenceValue(ctx, refvalues.Entry{TEE: "sim", Measurement: hex.EncodeToString(measurement)})
	require.NoError(t, err)

	// A wrong pin is refused before any request is sent.
	bad, err := adminclient.NewHTTPClient(adminclient.HTTPClientOptions{PinSHA256: hex.EncodeToString(make([]byte, 32))})
	require.NoError(t, err)
	_, err = adminclient.New(url, priv, adminclient.Options{HTTPClient: bad}).ListResources(ctx)
	require.ErrorContains(t, err, "pinned")

	c, err := client.New(url, simAttester{s}, client.Options{HTTPClient: hc})
	require.NoError(t, err)
	tok, err := c.Handshake(ctx)
	require.NoError(t, err)
	v, err := c.Resource(ctx, "default/key/app", "")
	require.NoError(t, err)
	require.Equal(t, "persisted", string(v))
	stop()
	require.Contains(t, out.String(), "cc-kbs: stopped")

	// Restart: same certificate, same token key (the old token still
	// works as a bearer), same resources.
	addr, out2, _ := start(t, cfg, false)
	require.Contains(t, out2.String(), fp)
	require.NotContains(t, out2.String(), "generated")
	c2, err := client.New("https://"+addr, simAttester{s}, client.Options{HTTPClient: hc, Key: nil})
	require.NoError(t, err)
	_, err = c2.Resource(ctx, "default/key/app", tok)
	require.Error(t, err, "a bearer token is bound to the key it was issued for; c2 has another key")
	c3, err := client.New("https://"+addr, simAttester{s}, client.Options{HTTPClient: hc})
	require.NoError(t, err)
	_, err = c3.Handshake(ctx)
	require.NoError(t, err)
	v, err = c3.Resource(ctx, "default/key/app", "")
	require.NoError(t, err)
	require.Equal(t, "persisted", string(v))
}

// TestRunInsecureHTTP: plain HTTP only with the explicit option, and it
// says so.
func TestRunInsecureHTTP(t *testing.T) {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	addr, out, _ := start(t, cfg, true)
	require.Contains(t, out.String(), "WARNING: serving plain HTTP")
	resp, err := http.Post("http://"+addr+"/kbs/v0/auth", "application/json", bytes.NewReader([]byte(`{"version":"0.4.0","tee":"snp","extra-params":""}`)))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	_, err = os.Stat(filepath.Join(cfg.DataDir, "tls.crt"))
	require.True(t, os.IsNotExist(err), "no certificate is generated for plain HTTP")
	require.Contains(t, out.String(), "admin API disabled")
}
