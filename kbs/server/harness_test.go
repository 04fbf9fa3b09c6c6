package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	stdlog "log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/log"
	"github.com/google/go-sev-guest/kds"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/sim"
	"github.com/cofferhq/coffer/attestation/snp"
	"github.com/cofferhq/coffer/attestation/snp/snptest"
	"github.com/cofferhq/coffer/attestation/tdx"
	kbsconfig "github.com/cofferhq/coffer/configs/kbs"
	"github.com/cofferhq/coffer/kbs/admin"
	"github.com/cofferhq/coffer/kbs/adminclient"
	"github.com/cofferhq/coffer/kbs/client"
	"github.com/cofferhq/coffer/kbs/problem"
	"github.com/cofferhq/coffer/kbs/protocol"
	"github.com/cofferhq/coffer/kbs/refvalues"
	"github.com/cofferhq/coffer/kbs/server"
	"github.com/cofferhq/coffer/kbs/session"
	"github.com/cofferhq/coffer/kbs/store"
	"github.com/cofferhq/coffer/kbs/token"
)

// clock is a settable test clock shared by the server's parts.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var (
	simOnce   sync.Once
	simSigner *sim.Signer
	simErr    error
)

// testSim returns a sim chain shared by the tests (RSA key generation is
// the slow part), created at snptest.Now with TCB snptest.GoodTCB.
func testSim(t testing.TB) *sim.Signer {
	t.Helper()
	simOnce.Do(func() {
		simSigner, simErr = sim.Generate(sim.GenerateOptions{Now: snptest.Now.Add(-time.Hour), TCB: snptest.GoodTCB})
	})
	require.NoError(t, simErr)
	return simSigner
}

// simAttester is a client.Attester signing sim reports.
type simAttester struct {
	s  *sim.Signer
	o  sim.ReportOptions
	as attestation.TEE
}

func (a *simAttester) TEE() attestation.TEE {
	if a.as != "" {
		return a.as
	}
	return attestation.TEESim
}

func (a *simAttester) Evidence(_ context.Context, rd []byte) ([]byte, error) {
	o := a.o
	o.ReportData = rd
	return a.s.Evidence(o)
}

// simMeasurement is the measurement the sim attesters report by default.
var simMeasurement = []byte("coffer-sim-measurement-0123456789abcdef-48bytes!")

type harnessOpts struct {
	noSimRoot   bool
	verifierTCB kds.TCBParts
	allowDebug  bool
	maxBody     int64
	// withTDX adds a TDX verifier (Intel root, no collateral); now sets the
	// clock (default snptest.Now).
	withTDX bool
	now     time.Time
	// wrap, when set, wraps each verifier (the benchmark meters them).
	wrap func(attestation.Verifier) attestation.Verifier
}

type harness struct {
	t        testing.TB
	clock    *clock
	store    *store.Store
	srv      *server.Server
	ts       *httptest.Server
	admin    *adminclient.Client
	adminKey ed25519.PrivateKey
	sim      *sim.Signer
	chip     *snptest.Chip
	tokens   *token.Signer
	// meter is set by the benchmark (verifiers wrapped by harnessOpts.wrap).
	meter *verifyMeter
}

// newHarness starts the real server on httptest TLS with a temporary bbolt
// store, SNP (fake go-sev-guest chain) and sim verifiers, the shipped
// default policies and an admin key.
func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	ctx := context.Background()
	clk := &clock{t: snptest.Now}
	if !o.now.IsZero() {
		clk.t = o.now
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "kbs.db"), store.Options{Now: clk.Now})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })

	chip, err := snptest.Default()
	require.NoError(t, err)
	snpV, err := snp.NewVerifier(snp.Config{TrustedRoots: chip.Roots(), MinimumTCB: o.verifierTCB, AllowDebug: o.allowDebug})
	require.NoError(t, err)
	simS := testSim(t)
	var root []byte
	if !o.noSimRoot {
		root = simS.RootPEM()
	}
	simV, err := sim.NewVerifier(sim.Config{RootPEM: root, MinimumTCB: o.verifierTCB, AllowDebug: o.allowDebug})
	require.NoError(t, err)

	tokKey, err := token.GenerateKey()
	require.NoError(t, err)
	tokens, err := token.NewSigner(tokKey, token.Options{Issuer: "cc-kbs-test", Now: clk.Now})
	require.NoError(t, err)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	adminV, err := admin.NewVerifier(pub, admin.Options{Now: clk.Now})
	require.NoError(t, err)

	verifiers := map[attestation.TEE]attestation.Verifier{attestation.TEESNP: snpV, attestation.TEESim: simV}
	if o.withTDX {
		tdxV, err := tdx.NewVerifier(tdx.Config{})
		require.NoError(t, err)
		verifiers[attestation.TEETDX] = tdxV
	}
	if o.wrap != nil {
		for t, v := range verifiers {
			verifiers[t] = o.wrap(v)
		}
	}
	srv, err := server.New(ctx, server.Config{
		Verifiers:                verifiers,
		Store:                    st,
		Sessions:                 session.New(session.Options{TTL: 5 * time.Minute, Now: clk.Now}),
		Tokens:                   tokens,
		Admin:                    adminV,
		DefaultAttestationPolicy: kbsconfig.DefaultAttestationPolicy,
		DefaultResourcePolicy:    kbsconfig.DefaultResourcePolicy,
		MaxBody:                  o.maxBody,
		Now:                      clk.Now,
	})
	require.NoError(t, err)
	ts := httptest.NewUnstartedServer(srv)
	// net/http logs a connection a client closed before the TLS handshake
	// (the benchmark's guest process exiting): noise that would interleave
	// with benchmark output.
	ts.Config.ErrorLog = stdlog.New(io.Discard, "", 0)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	// Keep a connection per concurrent client (the default keeps 2 idle
	// connections per host, so concurrent clients would keep redialling).
	ts.Client().Transport.(*http.Transport).MaxIdleConnsPerHost = 256
	ac := adminclient.New(ts.URL, priv, adminclient.Options{HTTPClient: ts.Client(), Subject: "test-admin", Now: clk.Now})
	return &harness{t: t, clock: clk, store: st, srv: srv, ts: ts, admin: ac, adminKey: priv, sim: simS, chip: chip, tokens: tokens}
}

// client returns a KBS client for attester with an ephemeral key (nil: P-256).
func (h *harness) client(a client.Attester, key any) *client.Client {
	h.t.Helper()
	c, err := client.New(h.ts.URL, a, client.Options{HTTPClient: h.ts.Client(), Key: key})
	require.NoError(h.t, err)
	return c
}

func (h *harness) trust(tee attestation.TEE, m []byte) {
	h.t.Helper()
	_, err := h.admin.AddReferenceValue(context.Background(), refvalues.Entry{TEE: string(tee), Measurement: hex.EncodeToString(m)})
	require.NoError(h.t, err)
}

func (h *harness) setResource(path, value string) {
	h.t.Helper()
	_, err := h.admin.SetResource(context.Background(), path, []byte(value))
	require.NoError(h.t, err)
}

func (h *harness) simAttester() *simAttester {
	return &simAttester{s: h.sim, o: sim.ReportOptions{Measurement: simMeasurement}}
}

func (h *harness) snpAttester() *snptest.Attester {
	return &snptest.Attester{Chip: h.chip}
}

// requireProblem asserts err is a KBS response with problem type name and
// HTTP status, and returns the problem.
func requireProblem(t testing.TB, err error, name string, status int) *problem.Problem {
	t.Helper()
	require.Error(t, err)
	var re *client.ResponseError
	require.True(t, errors.As(err, &re), "want a KBS problem response, got %v", err)
	require.NotNil(t, re.Problem, "body %q is not a problem", re.Body)
	require.Equal(t, problem.TypeBase+name, re.Problem.Type, "detail: %s", re.Problem.Detail)
	require.Equal(t, status, re.Status)
	require.Equal(t, status, re.Problem.Status)
	require.NotEmpty(t, re.Problem.Detail)
	return re.Problem
}

// requireNothingReleased checks the client's session cannot fetch path.
func requireNothingReleased(t testing.TB, c *client.Client, path string) {
	t.Helper()
	v, err := c.Resource(context.Background(), path, "")
	require.Nil(t, v)
	requireProblem(t, err, "unauthenticated", http.StatusUnauthorized)
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }

// sevJSON returns the raw SNP evidence of att (as kbs/client built it) as
// the sev-crate JSON document CoCo guest-components sends.
func sevJSON(t testing.TB, att *protocol.Attestation) []byte {
	t.Helper()
	ev, err := protocol.DecodeCompositeEvidence(att.TEEEvidence)
	require.NoError(t, err)
	doc, err := snp.EncodeSevJSON(ev.Primary)
	require.NoError(t, err)
	return doc
}

func TestMain(m *testing.M) {
	log.L.Logger.SetLevel(logrus.ErrorLevel)
	os.Exit(m.Run())
}
