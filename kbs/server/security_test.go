package server_test

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/kds"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/sim"
	"github.com/cofferhq/coffer/attestation/snp/snptest"
	"github.com/cofferhq/coffer/kbs/client"
	"github.com/cofferhq/coffer/kbs/problem"
	"github.com/cofferhq/coffer/kbs/protocol"
	"github.com/cofferhq/coffer/kbs/refvalues"
)

const secretPath = "default/key/app"

func secureHarness(t *testing.T, o harnessOpts) *harness {
	h := newHarness(t, o)
	h.trust(attestation.TEESim, simMeasurement)
	h.trust(attestation.TEESNP, snptest.DefaultMeasurement)
	h.setResource(secretPath, "top secret")
	return h
}

// rawProblem sends a request and decodes the problem response.
func rawProblem(t *testing.T, h *harness, method, path string, body []byte, hdr map[string]string) (*problem.Problem, int) {
	t.Helper()
	req, err := http.NewRequest(method, h.ts.URL+path, bytes.NewReader(body))
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := h.ts.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, problem.ContentType, resp.Header.Get("Content-Type"), "body %s", b)
	p, err := problem.Decode(b)
	require.NoError(t, err, "body %s", b)
	require.NotContains(t, string(b), "top secret")
	return p, resp.StatusCode
}

func requireType(t *testing.T, p *problem.Problem, status, wantStatus int, name string) {
	t.Helper()
	require.Equal(t, problem.TypeBase+name, p.Type, "detail: %s", p.Detail)
	require.Equal(t, wantStatus, status)
}

func TestNonceReplay(t *testing.T) {
	h := secureHarness(t, harnessOpts{})
	ctx := context.Background()
	c := h.client(h.simAttester(), nil)
	ch, err := c.Auth(ctx)
	require.NoError(t, err)
	att, err := c.BuildAttestation(ctx, ch)
	require.NoError(t, err)
	_, err = c.PostAttestation(ctx, att)
	require.NoError(t, err)
	// The same Attestation again on the same session: the nonce is spent.
	_, err = c.PostAttestation(ctx, att)
	requireProblem(t, err, "nonce-replay", http.StatusUnauthorized)

	// A failed first attempt spends the nonce too.
	c2 := h.client(h.simAttester(), nil)
	ch, err = c2.Auth(ctx)
	require.NoError(t, err)
	att, err = c2.BuildAttestation(ctx, ch)
	require.NoError(t, err)
	good := att.TEEEvidence
	att.TEEEvidence = protocol.EncodeEvidence([]byte("not a report"))
	_, err = c2.PostAttestation(ctx, att)
	requireProblem(t, err, "evidence-invalid", http.StatusUnauthorized)
	att.TEEEvidence = good
	_, err = c2.PostAttestation(ctx, att)
	requireProblem(t, err, "nonce-replay", http.StatusUnauthorized)
	requireNothingReleased(t, c2, secretPath)

	// Another session's nonce is refused.
	c3 := h.client(h.simAttester(), nil)
	_, err = c3.Auth(ctx)
	require.NoError(t, err)
	att.RuntimeData.Nonce = ch.Nonce
	_, err = c3.PostAttestation(ctx, att)
	requireProblem(t, err, "nonce-mismatch", http.StatusUnauthorized)
	requireNothingReleased(t, c3, secretPath)
}

// TestRelay: evidence bound to one tee-pubkey sent with another key (a
// relay or key substitution) fails on REPORT_DATA.
func TestRelay(t *testing.T) {
	h := secureHarness(t, harnessOpts{})
	ctx := context.Background()
	for name, a := range map[string]client.Attester{"sim": h.simAttester(), "snp": h.snpAttester()} {
		t.Run(name, func(t *testing.T) {
			victim := h.client(a, nil)
			attacker := h.client(a, ecKey(t, elliptic.P256()))
			ch, err := victim.Auth(ctx)
			require.NoError(t, err)
			att, err := victim.BuildAttestation(ctx, ch)
			require.NoError(t, err)
			pub, _ := attacker.PublicJWK().MarshalJSON()
			att.RuntimeData.TEEPubKey = pub
			_, err = victim.PostAttestation(ctx, att)
			p := requireProblem(t, err, "evidence-invalid", http.StatusUnauthorized)
			require.Equal(t, attestation.CheckReportData, p.Check)
			requireNothingReleased(t, victim, secretPath)
		})
	}
}

func TestExpiredSession(t *testing.T) {
	h := secureHarness(t, harnessOpts{})
	ctx := context.Background()
	c := h.client(h.simAttester(), nil)
	ch, err := c.Auth(ctx)
	require.NoError(t, err)
	att, err := c.BuildAttestation(ctx, ch)
	require.NoError(t, err)
	h.clock.Advance(5*time.Minute + time.Second)
	_, err = c.PostAttestation(ctx, att)
	requireProblem(t, err, "session-expired", http.StatusUnauthorized)

	// An attested session expires too, and so does its token.
	c2 := h.client(h.simAttester(), nil)
	tok, err := c2.Handshake(ctx)
	require.NoError(t, err)
	_, err = c2.Resource(ctx, secretPath, "")
	require.NoError(t, err)
	h.clock.Advance(10 * time.Minute)
	v, err := c2.Resource(ctx, secretPath, "")
	require.Nil(t, v)
	requireProblem(t, err, "session-expired", http.StatusUnauthorized)
	c3 := h.client(h.simAttester(), nil)
	v, err = c3.Resource(ctx, secretPath, tok)
	require.Nil(t, v)
	p := requireProblem(t, err, "unauthenticated", http.StatusUnauthorized)
	require.Contains(t, p.Detail, "exp")
}

// TestAttestationPolicyDenials: evidence that verifies but that the default
// attestation policy does not affirm gets no token.
func TestAttestationPolicyDenials(t *testing.T) {
	ctx := context.Background()
	h := secureHarness(t, harnessOpts{allowDebug: true})
	t.Run("wrong measurement", func(t *testing.T) {
		a := h.simAttester()
		a.o.Measurement = bytes.Repeat([]byte{0xee}, 48)
		c := h.client(a, nil)
		_, err := c.Handshake(ctx)
		p := requireProblem(t, err, "policy-denied", http.StatusForbidden)
		require.Equal(t, "attestation", p.Policy)
		require.Equal(t, "trust_claims", p.Rule)
		require.Contains(t, p.Detail, "executables=33")
		require.Contains(t, strings.Join(p.Reasons, " "), "is not in the sim reference values")
		requireNothingReleased(t, c, secretPath)
	})
	t.Run("debug by policy", func(t *testing.T) {
		a := h.simAttester()
		a.o.Policy = sim.DefaultPolicy | 1<<19
		c := h.client(a, nil)
		_, err := c.Handshake(ctx)
		p := requireProblem(t, err, "policy-denied", http.StatusForbidden)
		require.Contains(t, p.Detail, "configuration=96")
		require.Contains(t, strings.Join(p.Reasons, " "), "debug is enabled")
		requireNothingReleased(t, c, secretPath)
	})
	t.Run("TCB below the reference floor", func(t *testing.T) {
		_, err := h.admin.SetReferenceValues(ctx, mustJSON(t, refvalues.Values{
			attestation.TEESim: {Measurements: []string{hexOf(simMeasurement)}, MinTCB: &refvalues.TCB{Bootloader: 4, SNP: 23, Microcode: 213}},
		}))
		require.NoError(t, err)
		c := h.client(h.simAttester(), nil)
		_, err = c.Handshake(ctx)
		p := requireProblem(t, err, "policy-denied", http.StatusForbidden)
		require.Contains(t, p.Detail, "hardware=32")
		reasons := strings.Join(p.Reasons, "\n")
		for _, k := range []string{"reported TCB", "committed TCB", "launch TCB"} {
			require.Contains(t, reasons, k)
		}
		requireNothingReleased(t, c, secretPath)
	})
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// TestVerifierChecks: the verifier's own checks (debug forbidden, TCB floor
// on reported, committed and launch TCB) fail with evidence-invalid naming
// the check, for sim and SNP evidence.
func TestVerifierChecks(t *testing.T) {
	ctx := context.Background()
	floor := kds.TCBParts{BlSpl: 4, SnpSpl: 20, UcodeSpl: 200}
	low := kds.TCBParts{BlSpl: 4, SnpSpl: 8, UcodeSpl: 213}
	h := secureHarness(t, harnessOpts{verifierTCB: floor})
	cases := []struct {
		name  string
		check string
		sim   sim.ReportOptions
		snp   snptest.Report
	}{
		{"debug", attestation.CheckDebug, sim.ReportOptions{Policy: sim.DefaultPolicy | 1<<19}, snptest.Report{Policy: snptest.DebugPolicy}},
		{"reported TCB", attestation.CheckReportedTCB, sim.ReportOptions{ReportedTCB: &low}, snptest.Report{Reported: &low}},
		{"committed TCB", attestation.CheckCommittedTCB, sim.ReportOptions{CommittedTCB: &low}, snptest.Report{Committed: &low}},
		{"launch TCB", attestation.CheckLaunchTCB, sim.ReportOptions{LaunchTCB: &low}, snptest.Report{Launch: &low}},
	}
	for _, tc := range cases {
		for tee, a := range map[string]client.Attester{
			"sim": &simAttester{s: h.sim, o: withMeasurement(tc.sim)},
			"snp": &snptest.Attester{Chip: h.chip, Report: tc.snp},
		} {
			t.Run(tc.name+"/"+tee, func(t *testing.T) {
				c := h.client(a, nil)
				_, err := c.Handshake(ctx)
				p := requireProblem(t, err, "evidence-invalid", http.StatusUnauthorized)
				require.Equal(t, tc.check, p.Check)
				requireNothingReleased(t, c, secretPath)
			})
		}
	}
}

func withMeasurement(o sim.ReportOptions) sim.ReportOptions {
	o.Measurement = simMeasurement
	return o
}

// TestSimNotTrusted: without a configured sim root, sim evidence fails with
// check trusted_root naming the missing root; and sim-signed evidence
// presented as SNP never verifies against the SNP roots.
func TestSimNotTrusted(t *testing.T) {
	ctx := context.Background()
	h := secureHarness(t, harnessOpts{noSimRoot: true})
	c := h.client(h.simAttester(), nil)
	_, err := c.Handshake(ctx)
	p := requireProblem(t, err, "evidence-invalid", http.StatusUnauthorized)
	require.Equal(t, attestation.CheckTrustedRoot, p.Check)
	require.Contains(t, p.Detail, "sim root")
	requireNothingReleased(t, c, secretPath)

	h2 := secureHarness(t, harnessOpts{})
	a := h2.simAttester()
	a.as = attestation.TEESNP
	c = h2.client(a, nil)
	_, err = c.Handshake(ctx)
	p = requireProblem(t, err, "evidence-invalid", http.StatusUnauthorized)
	require.Contains(t, []string{attestation.CheckTrustedRoot, attestation.CheckProduct, attestation.CheckCertificates}, p.Check)
	requireNothingReleased(t, c, secretPath)
}

// TestResourcePathTraversal: "..", encoded dots and slashes are refused
// before any store access, even for an attested session.
func TestResourcePathTraversal(t *testing.T) {
	h := secureHarness(t, harnessOpts{})
	h.setResource("a/b/c", "other secret")
	ctx := context.Background()
	c := h.client(h.simAttester(), nil)
	tok, err := c.Handshake(ctx)
	require.NoError(t, err)
	for _, path := range []string{
		"../../../etc/passwd", "default/key/..", "default/../key/app", "default/key/app/..",
		"%2e%2e/%2e%2e/etc/passwd", "default/key/%2E%2E", "default%2fkey%2fapp/x/y", "default/key%2Fapp/x",
		"default/key/%252e%252e", "a/b%00/c", "./key/app", "default//app", "default/key/app/extra",
	} {
		t.Run(path, func(t *testing.T) {
			p, status := rawProblem(t, h, http.MethodGet, protocol.PathResource+path, nil, map[string]string{"Authorization": "Bearer " + tok})
			requireType(t, p, status, http.StatusBadRequest, "invalid-resource-path")
			require.Contains(t, p.Detail, path, "the server must see the path as sent")
			// The admin set endpoint validates the same way.
			p, status = rawProblem(t, h, http.MethodPost, protocol.PathResource+path, []byte("x"), nil)
			require.Contains(t, []int{http.StatusBadRequest, http.StatusUnauthorized}, status)
			_ = p
		})
	}
	list, err := h.admin.ListResources(ctx)
	require.NoError(t, err)
	require.Len(t, list, 2, "nothing was written")
}

func TestOversizeBodies(t *testing.T) {
	h := secureHarness(t, harnessOpts{maxBody: 64 << 10})
	big := bytes.Repeat([]byte("a"), 64<<10+1)
	for _, path := range []string{protocol.PathAuth, protocol.PathAttest, protocol.PathResource + "a/b/c", protocol.PathAttestationPolicy} {
		p, status := rawProblem(t, h, http.MethodPost, path, big, nil)
		if path == protocol.PathAuth || path == protocol.PathAttest {
			requireType(t, p, status, http.StatusRequestEntityTooLarge, "body-too-large")
		} else { // admin endpoints authenticate before reading the body
			requireType(t, p, status, http.StatusUnauthorized, "admin-unauthenticated")
		}
	}
	// A chunked body (no Content-Length) is cut at the limit too.
	req, err := http.NewRequest(http.MethodPost, h.ts.URL+protocol.PathAuth, io.MultiReader(bytes.NewReader(big)))
	require.NoError(t, err)
	req.ContentLength = -1
	resp, err := h.ts.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	// And an admin with a valid token gets 413 as well.
	_, err = h.admin.SetResource(context.Background(), "a/b/big", big)
	requireProblem(t, err, "body-too-large", http.StatusRequestEntityTooLarge)
}

func TestMalformedJSON(t *testing.T) {
	h := secureHarness(t, harnessOpts{})
	for _, body := range []string{"", "{", "[]", `{"version":"0.4.0","tee":"sim"} trailing`, "\x00\x01", `"str"`} {
		p, status := rawProblem(t, h, http.MethodPost, protocol.PathAuth, []byte(body), nil)
		requireType(t, p, status, http.StatusBadRequest, "malformed-json")
		p, status = rawProblem(t, h, http.MethodPost, protocol.PathAttest, []byte(body), nil)
		requireType(t, p, status, http.StatusBadRequest, "malformed-json")
	}
	// Wrong JSON types.
	p, status := rawProblem(t, h, http.MethodPost, protocol.PathAuth, []byte(`{"version": 4}`), nil)
	requireType(t, p, status, http.StatusBadRequest, "malformed-json")
	p, status = rawProblem(t, h, http.MethodPost, protocol.PathAttest, []byte(`{"runtime-data": "x"}`), nil)
	requireType(t, p, status, http.StatusBadRequest, "malformed-json")
	// Well-formed but wrong values.
	p, status = rawProblem(t, h, http.MethodPost, protocol.PathAuth, []byte(`{"version":"0.1.0","tee":"sim","extra-params":""}`), nil)
	requireType(t, p, status, http.StatusUnauthorized, "unsupported-version")
	p, status = rawProblem(t, h, http.MethodPost, protocol.PathAuth, []byte(`{"version":"0.4.0","tee":"sgx","extra-params":""}`), nil)
	requireType(t, p, status, http.StatusUnauthorized, "tee-not-enabled")
	p, status = rawProblem(t, h, http.MethodPost, protocol.PathAttest, []byte(`{"runtime-data":{"nonce":"x","tee-pubkey":{"kty":"oct","k":"AA"}},"tee-evidence":"AA"}`), nil)
	requireType(t, p, status, http.StatusBadRequest, "unsupported-key")
	p, status = rawProblem(t, h, http.MethodGet, protocol.PathAuth, nil, nil)
	requireType(t, p, status, http.StatusMethodNotAllowed, "method-not-allowed")
	p, status = rawProblem(t, h, http.MethodGet, "/kbs/v0/nope", nil, nil)
	requireType(t, p, status, http.StatusNotFound, "not-found")
}

func TestUnauthenticatedResource(t *testing.T) {
	h := secureHarness(t, harnessOpts{})
	ctx := context.Background()
	c := h.client(h.simAttester(), nil)
	v, err := c.Resource(ctx, secretPath, "")
	require.Nil(t, v)
	requireProblem(t, err, "unauthenticated", http.StatusUnauthorized)
	// An authenticated but unattested session.
	_, err = c.Auth(ctx)
	require.NoError(t, err)
	requireNothingReleased(t, c, secretPath)
	for _, bearer := range []string{"garbage", "a.b.c", strings.Repeat("x", 100)} {
		_, err = c.Resource(ctx, secretPath, bearer)
		requireProblem(t, err, "unauthenticated", http.StatusUnauthorized)
	}
	// A token from another KBS (same claims shape, other key).
	other := newHarness(t, harnessOpts{})
	other.trust(attestation.TEESim, simMeasurement)
	oc := other.client(h.simAttester(), nil)
	tok, err := oc.Handshake(ctx)
	require.NoError(t, err)
	_, err = h.client(h.simAttester(), nil).Resource(ctx, secretPath, tok)
	requireProblem(t, err, "unauthenticated", http.StatusUnauthorized)
}

// TestAdditionalEvidence: additional_evidence is hashed into REPORT_DATA
// with the nonce and tee-pubkey, as Trustee does. Evidence bound to one
// additional_evidence string and sent with another fails on REPORT_DATA;
// sent as bound, the handshake succeeds and the resource is released.
func TestAdditionalEvidence(t *testing.T) {
	h := secureHarness(t, harnessOpts{})
	ctx := context.Background()
	const devices = `{"nvgpu":"eyJldmlkZW5jZSI6ImZha2UifQ=="}`

	c, err := client.New(h.ts.URL, h.simAttester(), client.Options{HTTPClient: h.ts.Client(), AdditionalEvidence: devices})
	require.NoError(t, err)
	_, err = c.Handshake(ctx)
	require.NoError(t, err)
	v, err := c.Resource(ctx, secretPath, "")
	require.NoError(t, err)
	require.Equal(t, "top secret", string(v))

	// Bound to devices, sent with other additional evidence: refused.
	c2, err := client.New(h.ts.URL, h.simAttester(), client.Options{HTTPClient: h.ts.Client(), AdditionalEvidence: devices})
	require.NoError(t, err)
	ch, err := c2.Auth(ctx)
	require.NoError(t, err)
	att, err := c2.BuildAttestation(ctx, ch)
	require.NoError(t, err)
	ev, err := protocol.DecodeCompositeEvidence(att.TEEEvidence)
	require.NoError(t, err)
	att.TEEEvidence = protocol.EncodeCompositeEvidence(ev.Primary, `{"nvgpu":"b3RoZXI="}`)
	_, err = c2.PostAttestation(ctx, att)
	p := requireProblem(t, err, "evidence-invalid", http.StatusUnauthorized)
	require.Equal(t, attestation.CheckReportData, p.Check)
	requireNothingReleased(t, c2, secretPath)
}
