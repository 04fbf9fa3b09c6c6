package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/kbs/admin"
	"github.com/cofferhq/coffer/kbs/problem"
	"github.com/cofferhq/coffer/kbs/protocol"
)

// The fuzz targets drive the real handler in-process (no network) with
// arbitrary input and check the invariants every response must keep: a
// problem+json body for every error, statuses from the documented set, and
// never a released secret. `go test` runs their seed corpus; scripts/fuzz.sh
// runs each for a bounded time.

const fuzzSecret = "fuzz-secret-value"

func fuzzHarness(f *testing.F) *harness {
	h := newHarness(f, harnessOpts{maxBody: 64 << 10})
	h.trust(attestation.TEESim, simMeasurement)
	h.setResource("default/key/app", fuzzSecret)
	return h
}

// serve sends one request straight to the handler.
func serve(h *harness, method, target string, body []byte, hdr http.Header) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "https://kbs.test/", bytes.NewReader(body))
	// Parse the target as a request URI (no reference resolution, so ".."
	// stays); unparsable targets travel as an unescaped path.
	u, err := url.ParseRequestURI(target)
	if err != nil {
		u = &url.URL{Path: target}
	}
	req.URL, req.RequestURI = u, target
	for k, v := range hdr {
		req.Header[k] = v
	}
	w := httptest.NewRecorder()
	h.srv.ServeHTTP(w, req)
	return w
}

// checkResponse asserts the invariants of any response.
func checkResponse(t *testing.T, w *httptest.ResponseRecorder, allowed ...int) {
	t.Helper()
	require.Contains(t, allowed, w.Code, "status %d body %s", w.Code, w.Body.Bytes())
	require.NotContains(t, w.Body.String(), fuzzSecret)
	if w.Code/100 != 2 {
		require.Equal(t, problem.ContentType, w.Header().Get("Content-Type"))
		p, err := problem.Decode(w.Body.Bytes())
		require.NoError(t, err, "body %q", w.Body.Bytes())
		require.True(t, strings.HasPrefix(p.Type, problem.TypeBase), p.Type)
		require.Equal(t, w.Code, p.Status)
	}
}

func FuzzAuth(f *testing.F) {
	h := fuzzHarness(f)
	for _, s := range []string{
		`{"version":"0.4.0","tee":"sim","extra-params":""}`,
		`{"version":"0.4.0","tee":"snp","extra-params":{"supported-hash-algorithms":["sha256","sha384","sha512"]}}`,
		`{"version":"0.4.0","tee":"tdx","extra-params":{"supported-hash-algorithms":"x"}}`,
		`{"version":"0.1.0","tee":"sample"}`, `{`, `null`, `[]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		w := serve(h, http.MethodPost, protocol.PathAuth, body, nil)
		checkResponse(t, w, 200, 400, 401, 413)
		if w.Code == 200 {
			var ch protocol.Challenge
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &ch))
			require.NotEmpty(t, ch.Nonce)
			require.Contains(t, w.Header().Get("Set-Cookie"), protocol.SessionCookie+"=")
		}
	})
}

// newSession runs /auth in-process and returns the cookie header and nonce.
func newSession(t testing.TB, h *harness) (http.Header, string) {
	w := serve(h, http.MethodPost, protocol.PathAuth, []byte(`{"version":"0.4.0","tee":"sim","extra-params":""}`), nil)
	require.Equal(t, 200, w.Code)
	var ch protocol.Challenge
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &ch))
	c := w.Result().Cookies()[0]
	return http.Header{"Cookie": {c.Name + "=" + c.Value}}, ch.Nonce
}

func FuzzAttest(f *testing.F) {
	h := fuzzHarness(f)
	// A real attestation body as seed (its nonce is replaced per run).
	c := h.client(h.simAttester(), nil)
	ch, err := c.Auth(context.Background())
	require.NoError(f, err)
	att, err := c.BuildAttestation(context.Background(), ch)
	require.NoError(f, err)
	real, _ := json.Marshal(att)
	f.Add(real)
	f.Add([]byte(`{"runtime-data":{"nonce":"NONCE","tee-pubkey":{"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x":"AA","y":"AA"}},"tee-evidence":"AAAA"}`))
	f.Add([]byte(`{"init-data":{"format":"toml","body":"algorithm=\"sha256\""},"runtime-data":{"nonce":"NONCE"},"tee-evidence":{}}`))
	f.Add([]byte(`{}`))
	// guest-components shapes: SNP evidence as a sev-crate JSON document,
	// TDX evidence as {"cc_eventlog", "quote"}, with additional evidence.
	doc := sevJSON(f, att)
	gc := *att
	gc.TEEEvidence, _ = json.Marshal(map[string]any{"primary_evidence": json.RawMessage(doc), "additional_evidence": `{"gpu":"AAAA"}`})
	gcBody, _ := json.Marshal(gc)
	f.Add(gcBody)
	f.Add([]byte(`{"runtime-data":{"nonce":"NONCE"},"tee-evidence":{"primary_evidence":{"cc_eventlog":null,"quote":"BAACAIEAAAA="},"additional_evidence":"{}"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		hdr, nonce := newSession(t, h)
		// Let seeds carry the live nonce where they say NONCE or the seed's.
		body = bytes.ReplaceAll(body, []byte("NONCE"), []byte(nonce))
		body = bytes.ReplaceAll(body, []byte(ch.Nonce), []byte(nonce))
		w := serve(h, http.MethodPost, protocol.PathAttest, body, hdr)
		if bytes.Equal(body, bytes.ReplaceAll(real, []byte(ch.Nonce), []byte(nonce))) {
			// The untouched real body binds the seed's nonce in its
			// evidence: REPORT_DATA no longer matches.
			require.Equal(t, 401, w.Code)
		}
		checkResponse(t, w, 200, 400, 401, 403, 413)
		// Whatever happened, the session's nonce is now spent or unused,
		// never reusable after a 200.
		if w.Code == 200 {
			w2 := serve(h, http.MethodPost, protocol.PathAttest, body, hdr)
			require.Equal(t, 401, w2.Code)
		}
	})
}

func FuzzResource(f *testing.F) {
	h := fuzzHarness(f)
	for _, s := range []string{"default/key/app", "../../etc/passwd", "%2e%2e/x/y", "a/b/c", "a//b", "a/b/c?x=1", "default/key/app%00"} {
		f.Add(s, "")
		f.Add(s, "Bearer x.y.z")
	}
	f.Fuzz(func(t *testing.T, path, authz string) {
		hdr := http.Header{}
		if authz != "" {
			hdr.Set("Authorization", authz)
		}
		w := serve(h, http.MethodGet, protocol.PathResource+path, nil, hdr)
		// Never attested: nothing may be released.
		checkResponse(t, w, 400, 401)
	})
}

func fuzzAdminHeader(t testing.TB, h *harness) http.Header {
	tok, err := admin.Sign(h.adminKey, "fuzz", h.clock.Now(), time.Minute)
	require.NoError(t, err)
	return http.Header{"Authorization": {"Bearer " + tok}}
}

func FuzzAdminPolicy(f *testing.F) {
	h := fuzzHarness(f)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	f.Add(false, []byte(`{"policy":"`+b64("package policy\nimport rego.v1\ndefault allow := false\n")+`"}`))
	f.Add(true, []byte(`{"type":"rego","policy_id":"default","policy":"`+b64("package policy\nimport rego.v1\ntrust_claims := {\"hardware\": 2}\n")+`"}`))
	f.Add(true, []byte(`{"type":"opa","policy":"!!"}`))
	f.Add(false, []byte(`{"policy":"`+b64("package policy\nallow {")+`"}`))
	f.Add(false, []byte(`{"policy":"x","extra":1}`))
	f.Fuzz(func(t *testing.T, attestationLayer bool, body []byte) {
		path := protocol.PathResourcePolicy
		if attestationLayer {
			path = protocol.PathAttestationPolicy
		}
		w := serve(h, http.MethodPost, path, body, fuzzAdminHeader(t, h))
		checkResponse(t, w, 200, 400, 413)
		// The server keeps serving with whatever policy is now current.
		w = serve(h, http.MethodGet, protocol.PathResource+"default/key/app", nil, nil)
		checkResponse(t, w, 401)
	})
}

func FuzzAdminReferenceValues(f *testing.F) {
	h := fuzzHarness(f)
	m := strings.Repeat("ab", 48)
	f.Add(true, []byte(`{"tee":"snp","measurement":"`+m+`"}`))
	f.Add(false, []byte(`{"snp":{"measurements":["`+m+`"],"min_tcb":{"bootloader":1,"tee":0,"snp":2,"microcode":3}},"tdx":{"measurements":[],"min_tee_tcb_svn":"00000000000000000000000000000000"}}`))
	f.Add(false, []byte(`{"snp":null}`))
	f.Add(true, []byte(`{"tee":"sgx","measurement":"00"}`))
	f.Fuzz(func(t *testing.T, add bool, body []byte) {
		method := http.MethodPut
		if add {
			method = http.MethodPost
		}
		w := serve(h, method, protocol.PathAdmin+"reference-values", body, fuzzAdminHeader(t, h))
		checkResponse(t, w, 200, 400, 413)
		w = serve(h, http.MethodGet, protocol.PathAdmin+"reference-values", nil, fuzzAdminHeader(t, h))
		checkResponse(t, w, 200)
	})
}

func FuzzAdminSetResource(f *testing.F) {
	h := fuzzHarness(f)
	f.Add("r/t/x", []byte("value"))
	f.Add("../t/x", []byte("value"))
	f.Add("r/t/%2e%2e", []byte{})
	f.Fuzz(func(t *testing.T, path string, value []byte) {
		w := serve(h, http.MethodPost, protocol.PathResource+path, value, fuzzAdminHeader(t, h))
		checkResponse(t, w, 200, 400, 413)
		if w.Code == 200 {
			// What was stored is exactly what was sent, at a valid path.
			var meta protocol.ResourceMeta
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &meta))
			got, _, err := h.store.GetResource(meta.Path)
			require.NoError(t, err)
			require.Equal(t, value, append([]byte{}, got...))
		}
	})
}
