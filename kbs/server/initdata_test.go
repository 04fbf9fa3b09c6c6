package server_test

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/kbs/client"
	"github.com/cofferhq/coffer/kbs/protocol"
	"github.com/cofferhq/coffer/kbs/refvalues"
)

// Init-data documents: the one the operator trusts, and the allow-all
// agent policy a malicious host would launch the guest with instead.
const (
	trustedInitData = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"policy.rego\" = \"package agent_policy\\ndefault CreateContainerRequest := false\\n\"\n"
	hostInitData    = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"policy.rego\" = \"package agent_policy\\ndefault AllowRequestsFailingPolicy := true\\n\"\n"
)

// launchedWith returns a client for a sim guest launched with init-data
// body ("" for none), its HOST_DATA bound as the VMM binds it, sending
// that init-data in /attest, and the full digest of body.
func (h *harness) launchedWith(body string) (*client.Client, string) {
	h.t.Helper()
	a := h.simAttester()
	var o client.Options
	var digest []byte
	if body != "" {
		if strings.Contains(body, `"sha384"`) {
			s := sha512.Sum384([]byte(body))
			digest = s[:]
		} else {
			s := sha256.Sum256([]byte(body))
			digest = s[:]
		}
		a.o.HostData = digest[:32] // HOST_DATA: the digest truncated or padded to 32 bytes
		o.InitData = &protocol.InitData{Format: "toml", Body: body}
	}
	o.HTTPClient = h.ts.Client()
	c, err := client.New(h.ts.URL, a, o)
	require.NoError(h.t, err)
	return c, hexOf(digest)
}

// TestInitDataPinned: the init-data a guest proves (its digest matched
// HOST_DATA) must be one the reference values trust once any is
// configured for the TEE; with none configured any init-data, or none,
// is accepted as before.
func TestInitDataPinned(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, harnessOpts{})
	h.trust(attestation.TEESim, simMeasurement)
	h.setResource(secretPath, "s3cret")

	// No init-data reference values: any init-data, or none, attests.
	for _, body := range []string{trustedInitData, hostInitData, ""} {
		c, _ := h.launchedWith(body)
		_, err := c.Handshake(ctx)
		require.NoError(t, err, "without init-data reference values %q attests", body)
	}

	_, trusted := h.launchedWith(trustedInitData)
	require.Len(t, trusted, 96, "the full SHA-384 digest, not the 32 bytes bound in HOST_DATA")
	// An init-data digest trusted for another TEE pins nothing for sim.
	_, err := h.admin.AddReferenceValue(ctx, refvalues.Entry{TEE: "snp", InitData: trusted})
	require.NoError(t, err)
	c, _ := h.launchedWith(hostInitData)
	_, err = c.Handshake(ctx)
	require.NoError(t, err)

	v, err := h.admin.AddReferenceValue(ctx, refvalues.Entry{TEE: "sim", InitData: strings.ToUpper(trusted)})
	require.NoError(t, err)
	require.Equal(t, []string{trusted}, v.Values.For(attestation.TEESim).InitData)

	t.Run("trusted init-data", func(t *testing.T) {
		c, _ := h.launchedWith(trustedInitData)
		tok, err := c.Handshake(ctx)
		require.NoError(t, err)
		payload, err := h.tokens.Verify(tok)
		require.NoError(t, err)
		require.Contains(t, string(payload), `"init_data":"`+trusted+`"`)
		got, err := c.Resource(ctx, secretPath, "")
		require.NoError(t, err)
		require.Equal(t, "s3cret", string(got))
	})
	t.Run("other init-data", func(t *testing.T) {
		c, other := h.launchedWith(hostInitData)
		_, err := c.Handshake(ctx)
		p := requireProblem(t, err, "policy-denied", http.StatusForbidden)
		require.Equal(t, "attestation", p.Policy)
		require.Contains(t, p.Detail, "configuration=96")
		require.Contains(t, p.Reasons, fmt.Sprintf("init-data digest %s is not in the sim reference values (1 trusted)", other))
		requireNothingReleased(t, c, secretPath)
	})
	t.Run("no init-data", func(t *testing.T) {
		c, _ := h.launchedWith("")
		_, err := c.Handshake(ctx)
		p := requireProblem(t, err, "policy-denied", http.StatusForbidden)
		require.Contains(t, p.Reasons, "no init-data was sent, but the sim reference values pin init-data (1 trusted): the guest must send the init-data it was launched with")
		requireNothingReleased(t, c, secretPath)
	})
	t.Run("trusted init-data not bound by the evidence", func(t *testing.T) {
		// The host launched with its own init-data but the guest (or a
		// relay) sends the trusted document: HOST_DATA differs.
		a := h.simAttester()
		s := sha256.Sum256([]byte(hostInitData))
		a.o.HostData = s[:]
		c, err := client.New(h.ts.URL, a, client.Options{HTTPClient: h.ts.Client(), InitData: &protocol.InitData{Format: "toml", Body: trustedInitData}})
		require.NoError(t, err)
		_, err = c.Handshake(ctx)
		p := requireProblem(t, err, "evidence-invalid", http.StatusUnauthorized)
		require.Equal(t, attestation.CheckHostData, p.Check)
		requireNothingReleased(t, c, secretPath)
	})
}
