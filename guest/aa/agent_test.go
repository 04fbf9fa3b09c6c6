package aa

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/sim"
	kbsconfig "github.com/cofferhq/coffer/configs/kbs"
	"github.com/cofferhq/coffer/guest/attester"
	"github.com/cofferhq/coffer/initdata"
	"github.com/cofferhq/coffer/kbs/admin"
	"github.com/cofferhq/coffer/kbs/adminclient"
	"github.com/cofferhq/coffer/kbs/refvalues"
	"github.com/cofferhq/coffer/kbs/server"
	"github.com/cofferhq/coffer/kbs/session"
	"github.com/cofferhq/coffer/kbs/store"
	"github.com/cofferhq/coffer/kbs/token"
)

const initDataTOML = `version = "0.1.0"
algorithm = "sha384"
[data]
"aa.toml" = '''
[token_configs.kbs]
url = "https://127.0.0.1:8080"
'''
`

var simChain = sync.OnceValues(func() (*sim.Signer, error) { return sim.Generate(sim.GenerateOptions{}) })

// kbs is the real cc-kbs server in-process on httptest TLS, trusting the
// sim root, with the shipped default policies.
type kbs struct {
	ts    *httptest.Server
	admin *adminclient.Client
	sim   *sim.Signer
}

func newKBS(t *testing.T) *kbs {
	t.Helper()
	ctx := context.Background()
	s, err := simChain()
	require.NoError(t, err)
	st, err := store.Open(filepath.Join(t.TempDir(), "kbs.db"), store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	simV, err := sim.NewVerifier(sim.Config{RootPEM: s.RootPEM()})
	require.NoError(t, err)
	tokKey, err := token.GenerateKey()
	require.NoError(t, err)
	tokens, err := token.NewSigner(tokKey, token.Options{Issuer: "cc-kbs-test"})
	require.NoError(t, err)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	adminV, err := admin.NewVerifier(pub, admin.Options{})
	require.NoError(t, err)
	srv, err := server.New(ctx, server.Config{
		Verifiers:                map[attestation.TEE]attestation.Verifier{attestation.TEESim: simV},
		Store:                    st,
		Sessions:                 session.New(session.Options{TTL: 5 * time.Minute}),
		Tokens:                   tokens,
		Admin:                    adminV,
		DefaultAttestationPolicy: kbsconfig.DefaultAttestationPolicy,
		DefaultResourcePolicy:    kbsconfig.DefaultResourcePolicy,
	})
	require.NoError(t, err)
	ts := httptest.NewTLSServer(srv)
	t.Cleanup(ts.Close)
	ac := adminclient.New(ts.URL, priv, adminclient.Options{HTTPClient: ts.Client(), Subject: "test-admin"})
	return &kbs{ts: ts, admin: ac, sim: s}
}

func (k *kbs) certPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.ts.Certificate().Raw}))
}

func (k *kbs) trust(t *testing.T, m []byte) {
	_, err := k.admin.AddReferenceValue(context.Background(), refvalues.Entry{TEE: string(attestation.TEESim), Measurement: hex.EncodeToString(m)})
	require.NoError(t, err)
}

// simGuest returns the guest's sim attester over a fake fw_cfg tree with
// measurement m and host data h, as a sim VM's VMM sets them.
func simGuest(t *testing.T, s *sim.Signer, m, h []byte) attester.Attester {
	t.Helper()
	if h == nil {
		h = make([]byte, 32) // a VM launched without init-data
	}
	root := t.TempDir()
	r, err := s.Reporter()
	require.NoError(t, err)
	ident, err := r.MarshalPEM()
	require.NoError(t, err)
	for name, v := range map[string][]byte{
		sim.FWCfgIdentity:    ident,
		sim.FWCfgMeasurement: []byte(hex.EncodeToString(m)),
		sim.FWCfgHostData:    []byte(hex.EncodeToString(h)),
	} {
		p := filepath.Join(root, name, "raw")
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, v, 0o600))
	}
	a, err := attester.NewSim(root)
	require.NoError(t, err)
	return a
}

type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) add(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) phases() []Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Phase
	for _, e := range r.events {
		out = append(out, e.Phase)
	}
	return out
}

func TestMain(m *testing.M) {
	log.L.Logger.SetLevel(logrus.ErrorLevel)
	os.Exit(m.Run())
}

var measurement = []byte("coffer-aa-test-measurement-0123456789abcdef-48B!")

func hostDataFor(t *testing.T, raw string) []byte {
	d, err := initdata.Parse([]byte(raw))
	require.NoError(t, err)
	return initdata.Fit(d.Digest(), initdata.SizeHostData)
}

func TestAllowedWithInitDataAndResource(t *testing.T) {
	k := newKBS(t)
	k.trust(t, measurement)
	_, err := k.admin.SetResource(context.Background(), "default/key/1", []byte("layer-key"))
	require.NoError(t, err)

	rec := &recorder{}
	a, err := New(Config{
		KBSURL: k.ts.URL, KBSCertPEM: k.certPEM(),
		Attester: simGuest(t, k.sim, measurement, hostDataFor(t, initDataTOML)),
		InitData: []byte(initDataTOML), OnEvent: rec.add,
	})
	require.NoError(t, err)
	require.NoError(t, a.Attest(context.Background()))
	require.NotEmpty(t, a.Token())
	require.Equal(t, []Phase{PhaseEvidence, PhaseVerifying, PhaseAllowed}, rec.phases())
	for _, e := range rec.events {
		require.Equal(t, "sim", e.TEE)
		require.Equal(t, hex.EncodeToString(measurement), e.Measurement)
		require.Equal(t, k.ts.URL, e.KBSURL)
		require.Equal(t, 1, e.Attempt)
	}

	v, err := a.Resource(context.Background(), "kbs:///default/key/1")
	require.NoError(t, err)
	require.Equal(t, "layer-key", string(v))
	last := rec.events[len(rec.events)-1]
	require.Equal(t, PhaseKeysReleased, last.Phase)
	require.Equal(t, "kbs:///default/key/1", last.Resource)

	_, err = a.Resource(context.Background(), "kbs://ignored:1/default/key/missing")
	var nf *ResourceNotFoundError
	require.ErrorAs(t, err, &nf)
	require.ErrorIs(t, err, errdefs.ErrNotFound)
	require.Equal(t, "resource kbs://ignored:1/default/key/missing not found on the KBS: store it with `ccctl kbs resource set` or fix the URI", err.Error())

	_, err = a.Resource(context.Background(), "https://x/y")
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
}

func TestInitDataMismatchRejected(t *testing.T) {
	k := newKBS(t)
	k.trust(t, measurement)
	rec := &recorder{}
	// The VM was launched with other init-data than the agent sends.
	a, err := New(Config{
		KBSURL: k.ts.URL, KBSCertPEM: k.certPEM(),
		Attester: simGuest(t, k.sim, measurement, make([]byte, 32)),
		InitData: []byte(initDataTOML), OnEvent: rec.add,
	})
	require.NoError(t, err)
	err = a.Attest(context.Background())
	var er *EvidenceRejectedError
	require.ErrorAs(t, err, &er)
	require.Equal(t, attestation.CheckHostData, er.Check)
	require.ErrorIs(t, err, errdefs.ErrPermissionDenied)
	require.Contains(t, err.Error(), "evidence rejected by KBS: check \"host_data\"")
	require.Equal(t, []Phase{PhaseEvidence, PhaseVerifying, PhaseDenied}, rec.phases(), "a KBS verdict is not retried")
}

func TestDeniedByPolicy(t *testing.T) {
	k := newKBS(t)
	k.trust(t, []byte("some-other-measurement-that-is-48-bytes-long!!!!"))
	rec := &recorder{}
	a, err := New(Config{
		KBSURL: k.ts.URL, KBSCertPEM: k.certPEM(),
		Attester: simGuest(t, k.sim, measurement, nil), OnEvent: rec.add,
	})
	require.NoError(t, err)
	err = a.Attest(context.Background())
	var de *DeniedError
	require.ErrorAs(t, err, &de, "error: %v", err)
	require.ErrorIs(t, err, errdefs.ErrPermissionDenied)
	require.Contains(t, err.Error(), "attestation denied by KBS policy: rule ")
	require.Equal(t, []Phase{PhaseEvidence, PhaseVerifying, PhaseDenied}, rec.phases())
	require.Equal(t, err.Error(), rec.events[2].Reason)
	require.Equal(t, hex.EncodeToString(measurement), rec.events[2].Measurement)

	// Resource before a successful attestation attests first and fails the same way.
	_, err = a.Resource(context.Background(), "kbs:///default/key/1")
	require.ErrorAs(t, err, &de)
}

func TestWrongPinRefused(t *testing.T) {
	k := newKBS(t)
	k.trust(t, measurement)
	// Pin a certificate that neither is nor issued the KBS's (httptest
	// servers all share one certificate, so use the sim ARK).
	a, err := New(Config{
		KBSURL: k.ts.URL, KBSCertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.sim.ARK.Raw})),
		Attester: simGuest(t, k.sim, measurement, nil),
	})
	require.NoError(t, err)
	err = a.Attest(context.Background())
	var pe *PinError
	require.ErrorAs(t, err, &pe, "a pin mismatch is final, not retried: %v", err)
	require.ErrorIs(t, err, errdefs.ErrPermissionDenied)
	require.ErrorContains(t, err, "is neither the pinned certificate")
}

func TestKBSDown(t *testing.T) {
	s, err := simChain()
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	url := "https://" + l.Addr().String()
	l.Close()

	rec := &recorder{}
	a, err := New(Config{
		KBSURL: url, Attester: simGuest(t, s, measurement, nil), OnEvent: rec.add,
		Deadline: 2 * time.Second, Retry: Retry{Attempts: 3, InitialBackoff: 50 * time.Millisecond},
	})
	require.NoError(t, err)
	start := time.Now()
	err = a.Attest(context.Background())
	var ue *UnreachableError
	require.ErrorAs(t, err, &ue)
	require.ErrorIs(t, err, errdefs.ErrUnavailable)
	require.Equal(t, 3, ue.Attempts)
	require.Contains(t, err.Error(), "KBS unreachable at "+url+" after 3 attempts")
	require.Contains(t, err.Error(), "connection refused")
	require.Less(t, time.Since(start), 2*time.Second)
	require.Equal(t, []Phase{PhaseFailed, PhaseFailed, PhaseFailed}, rec.phases())
	for i, e := range rec.events {
		require.Equal(t, i+1, e.Attempt)
		require.Contains(t, e.Reason, "connection refused")
	}

	// The deadline stops retrying before the attempt budget.
	rec = &recorder{}
	a, err = New(Config{
		KBSURL: url, Attester: simGuest(t, s, measurement, nil), OnEvent: rec.add,
		Deadline: 300 * time.Millisecond, Retry: Retry{Attempts: 100, InitialBackoff: 100 * time.Millisecond},
	})
	require.NoError(t, err)
	err = a.Attest(context.Background())
	require.ErrorAs(t, err, &ue)
	require.Less(t, ue.Attempts, 100)
	require.Contains(t, err.Error(), "context deadline exceeded")
	require.True(t, errors.Is(err, errdefs.ErrUnavailable))
}

func TestNewErrors(t *testing.T) {
	_, err := New(Config{KBSURL: "ftp://x", Attester: nil})
	require.ErrorContains(t, err, `KBS URL "ftp://x"`)
	_, err = New(Config{KBSURL: "https://x:1"})
	require.ErrorContains(t, err, "no Attester")
	s, err := simChain()
	require.NoError(t, err)
	_, err = New(Config{KBSURL: "https://x:1", KBSCertPEM: "junk", Attester: simGuest(t, s, measurement, nil)})
	require.ErrorContains(t, err, "no PEM CERTIFICATE block")
}
