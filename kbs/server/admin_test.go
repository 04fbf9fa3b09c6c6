package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
	kbsconfig "github.com/cofferhq/coffer/configs/kbs"
	"github.com/cofferhq/coffer/kbs/admin"
	"github.com/cofferhq/coffer/kbs/adminclient"
	"github.com/cofferhq/coffer/kbs/protocol"
	"github.com/cofferhq/coffer/kbs/refvalues"
	"github.com/cofferhq/coffer/kbs/store"
)

// TestAdminAuthRequired: every admin endpoint refuses requests without a
// token, with a token signed by another key, with an expired token, and
// with a token for the wrong audience; nothing changes.
func TestAdminAuthRequired(t *testing.T) {
	h := secureHarness(t, harnessOpts{})
	ctx := context.Background()
	before, err := h.store.Audit(0)
	require.NoError(t, err)

	_, otherKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	forged, err := admin.Sign(otherKey, "mallory", h.clock.Now(), time.Minute)
	require.NoError(t, err)
	expired, err := admin.Sign(h.adminKey, "test-admin", h.clock.Now().Add(-time.Hour), time.Minute)
	require.NoError(t, err)
	policyBody := `{"policy":"` + base64.StdEncoding.EncodeToString([]byte("package policy\nimport rego.v1\ndefault allow := true\n")) + `"}`

	endpoints := []struct{ method, path, body string }{
		{http.MethodPost, protocol.PathResource + "default/key/app", "overwritten"},
		{http.MethodPost, protocol.PathResourcePolicy, policyBody},
		{http.MethodGet, protocol.PathResourcePolicy, ""},
		{http.MethodPost, protocol.PathAttestationPolicy, policyBody},
		{http.MethodGet, protocol.PathAttestationPolicy, ""},
		{http.MethodPost, protocol.PathAdmin + "reference-values", `{"tee":"sim","measurement":"` + strings.Repeat("ab", 48) + `"}`},
		{http.MethodPut, protocol.PathAdmin + "reference-values", `{}`},
		{http.MethodGet, protocol.PathAdmin + "reference-values", ""},
		{http.MethodGet, protocol.PathAdmin + "history?kind=resource-policy", ""},
		{http.MethodGet, protocol.PathAdmin + "audit", ""},
		{http.MethodGet, protocol.PathAdmin + "resources", ""},
		{http.MethodGet, protocol.PathAdmin + "resource/default/key/app", ""},
	}
	for _, ep := range endpoints {
		for name, hdr := range map[string]map[string]string{
			"no token":   nil,
			"not bearer": {"Authorization": "Basic YWRtaW46YWRtaW4="},
			"forged":     {"Authorization": "Bearer " + forged},
			"expired":    {"Authorization": "Bearer " + expired},
			"garbage":    {"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."},
		} {
			t.Run(ep.method+" "+ep.path+"/"+name, func(t *testing.T) {
				p, status := rawProblem(t, h, ep.method, ep.path, []byte(ep.body), hdr)
				requireType(t, p, status, http.StatusUnauthorized, "admin-unauthenticated")
			})
		}
	}
	after, err := h.store.Audit(0)
	require.NoError(t, err)
	require.Equal(t, before, after, "no admin change may happen")
	v, _, err := h.store.GetResource("default/key/app")
	require.NoError(t, err)
	require.Equal(t, "top secret", string(v))

	// And with the right key everything works.
	_, err = h.admin.ListResources(ctx)
	require.NoError(t, err)
}

// TestPoliciesVersionedAndAudited: policy updates are compiled first
// (invalid ones change nothing), versioned with timestamp and SHA-256,
// kept in history, and take effect immediately.
func TestPoliciesVersionedAndAudited(t *testing.T) {
	h := secureHarness(t, harnessOpts{})
	ctx := context.Background()

	cur, err := h.admin.Policy(ctx, adminclient.KindAttestationPolicy)
	require.NoError(t, err)
	require.Equal(t, uint64(1), cur.Version)
	require.Equal(t, kbsconfig.DefaultAttestationPolicy, cur.Content)
	require.Equal(t, store.Sum([]byte(kbsconfig.DefaultAttestationPolicy)), cur.SHA256)

	_, err = h.admin.SetPolicy(ctx, adminclient.KindAttestationPolicy, []byte("package policy\nthis is not rego"))
	p := requireProblem(t, err, "invalid-policy", http.StatusBadRequest)
	require.Equal(t, "attestation", p.Policy)
	_, err = h.admin.SetPolicy(ctx, adminclient.KindResourcePolicy, []byte("package policy\nimport rego.v1\ndefault deny := true\n"))
	requireProblem(t, err, "invalid-policy", http.StatusBadRequest)

	// An attestation policy that affirms everything except sim.
	strict := `package policy
import rego.v1
default trust_claims := {"executables": 96}
trust_claims := {"executables": 2, "hardware": 2, "configuration": 2} if input.tee != "sim"
reasons contains "sim is not accepted here" if input.tee == "sim"
`
	h.clock.Advance(time.Minute)
	v2, err := h.admin.SetPolicy(ctx, adminclient.KindAttestationPolicy, []byte(strict))
	require.NoError(t, err)
	require.Equal(t, uint64(2), v2.Version)
	require.Equal(t, h.clock.Now().UTC(), v2.Time)
	require.Equal(t, "test-admin", v2.Actor)

	c := h.client(h.simAttester(), nil)
	_, err = c.Handshake(ctx)
	p = requireProblem(t, err, "policy-denied", http.StatusForbidden)
	require.Equal(t, []string{"sim is not accepted here"}, p.Reasons)
	require.Contains(t, p.Detail, v2.ID)
	c = h.client(h.snpAttester(), nil)
	_, err = c.Handshake(ctx)
	require.NoError(t, err)

	hist, err := h.admin.History(ctx, adminclient.KindAttestationPolicy)
	require.NoError(t, err)
	require.Len(t, hist, 2)
	require.Equal(t, kbsconfig.DefaultAttestationPolicy, hist[0].Content)
	require.Equal(t, strict, hist[1].Content)

	audit, err := h.admin.Audit(ctx, 0)
	require.NoError(t, err)
	last := audit[len(audit)-1]
	require.Equal(t, "attestation-policy", last.Kind)
	require.Equal(t, uint64(2), last.Version)
	require.Equal(t, v2.SHA256, last.SHA256)
	require.Equal(t, "test-admin", last.Actor)
}

func TestReferenceValuesAdmin(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	m := strings.Repeat("AB", 48)
	v, err := h.admin.AddReferenceValue(ctx, refvalues.Entry{TEE: "snp", Measurement: m})
	require.NoError(t, err)
	require.Equal(t, uint64(1), v.Version)
	require.Equal(t, []string{strings.ToLower(m)}, v.Values[attestation.TEESNP].Measurements)
	again, err := h.admin.AddReferenceValue(ctx, refvalues.Entry{TEE: "snp", Measurement: strings.ToLower(m)})
	require.NoError(t, err)
	require.Equal(t, uint64(1), again.Version, "adding a known measurement is a no-op")

	_, err = h.admin.AddReferenceValue(ctx, refvalues.Entry{TEE: "snp", Measurement: "abcd"})
	requireProblem(t, err, "bad-request", http.StatusBadRequest)
	_, err = h.admin.AddReferenceValue(ctx, refvalues.Entry{TEE: "sgx", Measurement: m})
	requireProblem(t, err, "bad-request", http.StatusBadRequest)
	_, err = h.admin.AddReferenceValue(ctx, refvalues.Entry{TEE: "snp", InitData: "abcd"})
	requireProblem(t, err, "bad-request", http.StatusBadRequest)
	_, err = h.admin.AddReferenceValue(ctx, refvalues.Entry{TEE: "snp", Measurement: m, InitData: strings.Repeat("ab", 32)})
	requireProblem(t, err, "bad-request", http.StatusBadRequest)
	_, err = h.admin.SetReferenceValues(ctx, []byte(`{"snp":{"measurements":[],"init_data":["zz"]}}`))
	requireProblem(t, err, "bad-request", http.StatusBadRequest)
	_, err = h.admin.SetReferenceValues(ctx, []byte(`{"snp":{"measurements":["zz"]}}`))
	requireProblem(t, err, "bad-request", http.StatusBadRequest)
	_, err = h.admin.SetReferenceValues(ctx, []byte(`{"snp":{"unknown":1}}`))
	requireProblem(t, err, "bad-request", http.StatusBadRequest)

	cur, err := h.admin.ReferenceValues(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(1), cur.Version)
	hist, err := h.admin.History(ctx, adminclient.KindReferenceValues)
	require.NoError(t, err)
	require.Len(t, hist, 1)

	// An init-data digest is versioned and audited like a measurement.
	d := strings.Repeat("CD", 48)
	v, err = h.admin.AddReferenceValue(ctx, refvalues.Entry{TEE: "snp", InitData: d})
	require.NoError(t, err)
	require.Equal(t, uint64(2), v.Version)
	require.Equal(t, []string{strings.ToLower(d)}, v.Values[attestation.TEESNP].InitData)
	require.Equal(t, []string{strings.ToLower(m)}, v.Values[attestation.TEESNP].Measurements)
	audit, err := h.admin.Audit(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, "reference-values", audit[0].Kind)
	require.Equal(t, uint64(2), audit[0].Version)
}

func TestAdminResourceReadBack(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	meta, err := h.admin.SetResource(ctx, "r/t/x", []byte{0, 1, 2, 255})
	require.NoError(t, err)
	require.Equal(t, uint64(1), meta.Version)
	v, err := h.admin.GetResource(ctx, "r/t/x")
	require.NoError(t, err)
	require.Equal(t, []byte{0, 1, 2, 255}, v)
	_, err = h.admin.GetResource(ctx, "r/t/none")
	requireProblem(t, err, "not-found", http.StatusNotFound)
	_, err = h.admin.SetResource(ctx, "r/../x", []byte("x"))
	require.Error(t, err, "the client validates paths too")
}
