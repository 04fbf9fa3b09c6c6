package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	tdxtestdata "github.com/google/go-tdx-guest/testing/testdata"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/snp/snptest"
	"github.com/cofferhq/coffer/kbs/client"
	"github.com/cofferhq/coffer/kbs/protocol"
	"github.com/cofferhq/coffer/kbs/token"
)

func rsaKey(t *testing.T) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	return k
}

func ecKey(t *testing.T, c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	require.NoError(t, err)
	return k
}

// TestFullFlow runs auth → attest → resource through a real HTTPS client
// against the real server, for sim and for SNP evidence (go-sev-guest's
// fake signer), with RSA and EC tee keys, decrypting the JWE with the
// test's private key; then fetches again with the bearer token alone.
func TestFullFlow(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.trust(attestation.TEESim, simMeasurement)
	h.trust(attestation.TEESNP, snptest.DefaultMeasurement)
	h.setResource("default/key/app", "the app key")

	attesters := map[string]func() client.Attester{
		"sim": func() client.Attester { return h.simAttester() },
		"snp": func() client.Attester { return h.snpAttester() },
	}
	keys := map[string]func() any{
		"RSA-OAEP-256":        func() any { return rsaKey(t) },
		"ECDH-ES+A256KW/P256": func() any { return ecKey(t, elliptic.P256()) },
		"ECDH-ES+A256KW/P384": func() any { return ecKey(t, elliptic.P384()) },
	}
	for an, mkA := range attesters {
		for kn, mkK := range keys {
			t.Run(an+"/"+kn, func(t *testing.T) {
				ctx := context.Background()
				key := mkK()
				c := h.client(mkA(), key)
				tok, err := c.Handshake(ctx)
				require.NoError(t, err)

				v, err := c.Resource(ctx, "default/key/app", "")
				require.NoError(t, err)
				require.Equal(t, "the app key", string(v))

				// The token alone (no cookie) also works, encrypted to the
				// same key.
				c2 := h.client(mkA(), key)
				v, err = c2.Resource(ctx, "default/key/app", tok)
				require.NoError(t, err)
				require.Equal(t, "the app key", string(v))

				// The token carries an affirming EAR appraisal of this TEE.
				payload, err := h.tokens.Verify(tok)
				require.NoError(t, err)
				var claims token.Claims
				require.NoError(t, json.Unmarshal(payload, &claims))
				ap := claims.Submods[token.Submod]
				require.Equal(t, "affirming", string(ap.Status))
				require.Contains(t, ap.AnnotatedEvidence, an)
				require.Contains(t, ap.PolicyID, "attestation-policy@v1:sha256:")
				pub, err := token.TEEPubKey(payload)
				require.NoError(t, err)
				want, _ := c.PublicJWK().MarshalJSON()
				require.JSONEq(t, string(want), string(pub))

				// Not found after policy allow.
				_, err = c.Resource(ctx, "default/key/missing", "")
				requireProblem(t, err, "not-found", http.StatusNotFound)
			})
		}
	}
}

// TestTrusteeHashNegotiation: a client that sends extra-params "" (as
// Trustee's older clients do) gets sha384; one that lists only sha512 gets
// sha512 and its REPORT_DATA is the full SHA-512.
func TestTrusteeHashNegotiation(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.trust(attestation.TEESim, simMeasurement)
	ctx := context.Background()
	for _, extra := range []string{`""`, `{"supported-hash-algorithms":["sha512"]}`, `{}`} {
		c, err := client.New(h.ts.URL, h.simAttester(), client.Options{HTTPClient: h.ts.Client(), ExtraParams: json.RawMessage(extra)})
		require.NoError(t, err)
		_, err = c.Handshake(ctx)
		require.NoError(t, err, extra)
	}
}

// TestInitData: init-data whose digest is the report's HOST_DATA passes and
// lands in the token; any other HOST_DATA fails check host_data.
func TestInitData(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.trust(attestation.TEESim, simMeasurement)
	h.setResource("default/key/app", "v")
	ctx := context.Background()
	body := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"policy.rego\" = \"package agent_policy\"\n"
	digest := sha256.Sum256([]byte(body))
	init := &protocol.InitData{Format: "toml", Body: body}

	a := h.simAttester()
	a.o.HostData = digest[:]
	c, err := client.New(h.ts.URL, a, client.Options{HTTPClient: h.ts.Client(), InitData: init})
	require.NoError(t, err)
	tok, err := c.Handshake(ctx)
	require.NoError(t, err)
	payload, err := h.tokens.Verify(tok)
	require.NoError(t, err)
	require.Contains(t, string(payload), `"init_data_claims":{"policy.rego":"package agent_policy"}`)

	bad := h.simAttester()
	bad.o.HostData = make([]byte, 32)
	c, err = client.New(h.ts.URL, bad, client.Options{HTTPClient: h.ts.Client(), InitData: init})
	require.NoError(t, err)
	_, err = c.Handshake(ctx)
	p := requireProblem(t, err, "evidence-invalid", http.StatusUnauthorized)
	require.Equal(t, attestation.CheckHostData, p.Check)
	requireNothingReleased(t, c, "default/key/app")
}

// TestResourcePolicyPerPath: a resource policy that keeps sim guests out of
// repository "prod" denies exactly that path, naming the rule.
func TestResourcePolicyPerPath(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.trust(attestation.TEESim, simMeasurement)
	h.setResource("prod/key/db", "prod secret")
	h.setResource("dev/key/db", "dev secret")
	ctx := context.Background()
	src := `package policy
import rego.v1
default allow := false
ev := input.claims.submods.cpu0["ear.veraison.annotated-evidence"]
allow if {
	input.claims.submods.cpu0["ear.status"] == "affirming"
	not ev.sim
}
allow if {
	input.claims.submods.cpu0["ear.status"] == "affirming"
	ev.sim
	input.request.repository != "prod"
}
reasons contains "sim guests never get prod resources" if {
	ev.sim
	input.request.repository == "prod"
}
`
	v, err := h.admin.SetPolicy(ctx, "resource-policy", []byte(src))
	require.NoError(t, err)
	require.Equal(t, uint64(2), v.Version, "version 1 is the shipped default")

	c := h.client(h.simAttester(), nil)
	_, err = c.Handshake(ctx)
	require.NoError(t, err)
	got, err := c.Resource(ctx, "dev/key/db", "")
	require.NoError(t, err)
	require.Equal(t, "dev secret", string(got))
	got, err = c.Resource(ctx, "prod/key/db", "")
	require.Nil(t, got)
	p := requireProblem(t, err, "policy-denied", http.StatusForbidden)
	require.Equal(t, "resource", p.Policy)
	require.Equal(t, "allow", p.Rule)
	require.Equal(t, []string{"sim guests never get prod resources"}, p.Reasons)
	require.True(t, strings.Contains(p.Detail, "resource-policy@v2"), p.Detail)
}

// tdxSample is a client.Attester returning go-tdx-guest's real Sapphire
// Rapids quote, whatever REPORT_DATA is asked for.
type tdxSample struct{}

func (tdxSample) TEE() attestation.TEE { return attestation.TEETDX }
func (tdxSample) Evidence(context.Context, []byte) ([]byte, error) {
	return append([]byte(nil), tdxtestdata.RawQuote...), nil
}

// TestTDXWiring sends the real Sapphire Rapids sample quote through the
// KBS protocol at a time inside its PCK validity: the Intel chain and the
// quote signatures verify, and it fails exactly at check report_data,
// because a recorded quote cannot be bound to this session's nonce and key.
func TestTDXWiring(t *testing.T) {
	h := newHarness(t, harnessOpts{withTDX: true, now: time.Date(2023, time.July, 1, 1, 0, 0, 0, time.UTC)})
	c := h.client(tdxSample{}, nil)
	_, err := c.Handshake(context.Background())
	p := requireProblem(t, err, "evidence-invalid", http.StatusUnauthorized)
	require.Equal(t, attestation.CheckReportData, p.Check, p.Detail)
}

// TestGuestComponentsEvidence sends SNP evidence as CoCo guest-components
// does (primary_evidence a sev-crate JSON document built from go-sev-guest
// fake-signed evidence, additional_evidence "{}"), through the real
// server, and checks the refusals: the document for the wrong TEE, an
// unknown object, and a document whose fields no longer match the
// signature.
func TestGuestComponentsEvidence(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.trust(attestation.TEESNP, snptest.DefaultMeasurement)
	h.setResource("default/key/app", "the app key")
	ctx := context.Background()

	// attest sends primary (a JSON document) for a fresh session of tee.
	attest := func(tee client.Attester, mutate func(doc map[string]any)) (*client.Client, error) {
		c := h.client(tee, nil)
		ch, err := c.Auth(ctx)
		require.NoError(t, err)
		att, err := c.BuildAttestation(ctx, ch)
		require.NoError(t, err)
		// The client signed raw evidence; re-send it as guest-components does.
		doc := sevJSON(t, att)
		if mutate != nil {
			var m map[string]any
			require.NoError(t, json.Unmarshal(doc, &m))
			mutate(m)
			doc, _ = json.Marshal(m)
		}
		att.TEEEvidence, _ = json.Marshal(map[string]any{"primary_evidence": json.RawMessage(doc), "additional_evidence": ""})
		_, err = c.PostAttestation(ctx, att)
		return c, err
	}

	c, err := attest(h.snpAttester(), nil)
	require.NoError(t, err)
	v, err := c.Resource(ctx, "default/key/app", "")
	require.NoError(t, err)
	require.Equal(t, "the app key", string(v))

	// A field changed after signing: the report signature fails.
	c, err = attest(h.snpAttester(), func(m map[string]any) {
		m["attestation_report"].(map[string]any)["guest_svn"] = 9
	})
	p := requireProblem(t, err, "evidence-invalid", http.StatusUnauthorized)
	require.Equal(t, attestation.CheckSignature, p.Check)
	requireNothingReleased(t, c, "default/key/app")

	// An object of neither guest-components shape: a bad request.
	c, err = attest(h.snpAttester(), func(m map[string]any) {
		m["report"] = m["attestation_report"]
		delete(m, "attestation_report")
	})
	p = requireProblem(t, err, "bad-request", http.StatusBadRequest)
	require.Contains(t, p.Detail, "neither guest-components SNP evidence")

	// TDX evidence (guest-components shape) on an snp session: refused,
	// naming the format and the session's TEE.
	c = h.client(h.snpAttester(), nil)
	ch, err := c.Auth(ctx)
	require.NoError(t, err)
	att, err := c.BuildAttestation(ctx, ch)
	require.NoError(t, err)
	tdxDoc, _ := json.Marshal(map[string]any{"cc_eventlog": nil, "quote": tdxtestdata.RawQuote})
	att.TEEEvidence, _ = json.Marshal(map[string]any{"primary_evidence": json.RawMessage(tdxDoc), "additional_evidence": ""})
	_, err = c.PostAttestation(ctx, att)
	p = requireProblem(t, err, "evidence-invalid", http.StatusUnauthorized)
	require.Equal(t, attestation.CheckParse, p.Check)
	require.Contains(t, p.Detail, `tee-evidence is guest-components TDX evidence, but the session was opened for tee "snp"`)
}
