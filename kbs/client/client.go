// Package client is a KBS protocol v0.4.0 client: the guest side of the
// RCAR handshake (auth → attest) and resource retrieval with decryption,
// as guest-components' kbs_protocol client does it
// (attestation-agent/kbs_protocol/src/client/rcar_client.rs): an ephemeral
// key pair per client, runtime data {nonce, tee-pubkey} hashed into
// REPORT_DATA (attestation/reportdata), evidence from an Attester, the
// session cookie kept in a cookie jar.
package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/reportdata"
	"github.com/cofferhq/coffer/kbs/jwe"
	"github.com/cofferhq/coffer/kbs/problem"
	"github.com/cofferhq/coffer/kbs/protocol"
)

// Attester produces TEE evidence binding 64 bytes of REPORT_DATA.
type Attester interface {
	// TEE is the evidence format, sent as Request.tee.
	TEE() attestation.TEE
	// Evidence returns raw evidence (an SNP report with optional
	// certificate table, or a TDX quote) whose REPORT_DATA is reportData.
	Evidence(ctx context.Context, reportData []byte) ([]byte, error)
}

// ResponseError is a non-2xx KBS response.
type ResponseError struct {
	// Op is the request, e.g. "POST /kbs/v0/attest".
	Op string
	// Status is the HTTP status code.
	Status int
	// Problem is the decoded problem body, nil if the body was not one.
	Problem *problem.Problem
	// Body is the raw body (up to 64 KiB).
	Body []byte
}

// Error returns the operation, status and problem detail.
func (e *ResponseError) Error() string {
	if e.Problem != nil {
		return fmt.Sprintf("%s: HTTP %d %s: %s", e.Op, e.Status, e.Problem.Type, e.Problem.Detail)
	}
	return fmt.Sprintf("%s: HTTP %d: %q", e.Op, e.Status, e.Body)
}

// ProblemType returns the problem type name (suffix after
// problem.TypeBase) of err if it is a *ResponseError with a Coffer
// problem, else "".
func ProblemType(err error) string {
	var re *ResponseError
	if errors.As(err, &re) && re.Problem != nil {
		return strings.TrimPrefix(re.Problem.Type, problem.TypeBase)
	}
	return ""
}

// Options configure a Client.
type Options struct {
	// HTTPClient is used for requests; its Jar is replaced by a fresh
	// cookie jar. Nil means a new http.Client.
	HTTPClient *http.Client
	// Key is the ephemeral TEE key: *rsa.PrivateKey (RSA-OAEP-256) or
	// *ecdsa.PrivateKey (ECDH-ES+A256KW). Nil: a new P-256 key.
	Key crypto.PrivateKey
	// AdditionalEvidence is sent as tee-evidence additional_evidence and
	// hashed into REPORT_DATA with the nonce and tee-pubkey (Trustee's
	// runtime data). "" sends none.
	AdditionalEvidence string
	// InitData is sent as "init-data" when set.
	InitData *protocol.InitData
	// ExtraParams is the /auth "extra-params"; nil sends
	// {"supported-hash-algorithms": ["sha256","sha384","sha512"]}.
	ExtraParams json.RawMessage
}

// Client talks to one KBS. It is not safe for concurrent use.
type Client struct {
	base     string
	hc       *http.Client
	attester Attester
	key      crypto.PrivateKey
	jwk      jose.JSONWebKey
	o        Options
	hashAlg  string
	token    string
}

// New returns a Client for the KBS at baseURL ("https://host:port").
func New(baseURL string, a Attester, o Options) (*Client, error) {
	hc := &http.Client{}
	if o.HTTPClient != nil {
		c := *o.HTTPClient
		hc = &c
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	hc.Jar = jar
	key := o.Key
	if key == nil {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("generate ephemeral TEE key: %w", err)
		}
	}
	var jwk jose.JSONWebKey
	switch k := key.(type) {
	case *rsa.PrivateKey:
		jwk = jose.JSONWebKey{Key: &k.PublicKey, Algorithm: string(jose.RSA_OAEP_256)}
	case *ecdsa.PrivateKey:
		jwk = jose.JSONWebKey{Key: &k.PublicKey, Algorithm: string(jose.ECDH_ES_A256KW)}
	default:
		return nil, fmt.Errorf("ephemeral TEE key is %T: want *rsa.PrivateKey or *ecdsa.PrivateKey", key)
	}
	if o.ExtraParams == nil {
		o.ExtraParams = json.RawMessage(`{"supported-hash-algorithms":["sha256","sha384","sha512"]}`)
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), hc: hc, attester: a, key: key, jwk: jwk, o: o}, nil
}

// PublicJWK returns the tee-pubkey JWK as sent in runtime-data.
func (c *Client) PublicJWK() jose.JSONWebKey { return c.jwk }

// Token returns the last attestation token, "" before Handshake.
func (c *Client) Token() string { return c.token }

// Auth sends the Request and returns the Challenge; the session cookie is
// kept in the client's jar.
func (c *Client) Auth(ctx context.Context) (*protocol.Challenge, error) {
	req := protocol.Request{Version: protocol.Version, TEE: string(c.attester.TEE()), ExtraParams: c.o.ExtraParams}
	var ch struct {
		Nonce       string          `json:"nonce"`
		ExtraParams json.RawMessage `json:"extra-params"`
	}
	if err := c.do(ctx, http.MethodPost, protocol.PathAuth, req, "", &ch); err != nil {
		return nil, err
	}
	c.hashAlg = protocol.DefaultHash
	var extra map[string]any
	if json.Unmarshal(ch.ExtraParams, &extra) == nil {
		if s, ok := extra[protocol.ExtraSelectedHashAlgorithm].(string); ok {
			if h, ok := protocol.NormalizeHash(s); ok {
				c.hashAlg = h
			}
		}
	}
	return &protocol.Challenge{Nonce: ch.Nonce, ExtraParams: ch.ExtraParams}, nil
}

// BuildAttestation computes REPORT_DATA for ch's nonce and the client key,
// gets evidence from the Attester and returns the Attestation body.
func (c *Client) BuildAttestation(ctx context.Context, ch *protocol.Challenge) (*protocol.Attestation, error) {
	rd, err := reportdata.RuntimeData{Nonce: ch.Nonce, TeePubKey: &c.jwk, AdditionalEvidence: c.o.AdditionalEvidence}.Hash(c.hashAlg)
	if err != nil {
		return nil, err
	}
	ev, err := c.attester.Evidence(ctx, rd)
	if err != nil {
		return nil, fmt.Errorf("get %s evidence: %w", c.attester.TEE(), err)
	}
	pub, err := c.jwk.MarshalJSON()
	if err != nil {
		return nil, err
	}
	return &protocol.Attestation{
		InitData:    c.o.InitData,
		RuntimeData: protocol.RuntimeData{Nonce: ch.Nonce, TEEPubKey: pub},
		TEEEvidence: protocol.EncodeCompositeEvidence(ev, c.o.AdditionalEvidence),
	}, nil
}

// PostAttestation sends att and returns the token.
func (c *Client) PostAttestation(ctx context.Context, att *protocol.Attestation) (string, error) {
	var tok protocol.AttestationToken
	if err := c.do(ctx, http.MethodPost, protocol.PathAttest, att, "", &tok); err != nil {
		return "", err
	}
	c.token = tok.Token
	return tok.Token, nil
}

// Handshake runs Auth, BuildAttestation and PostAttestation.
func (c *Client) Handshake(ctx context.Context) (string, error) {
	ch, err := c.Auth(ctx)
	if err != nil {
		return "", err
	}
	att, err := c.BuildAttestation(ctx, ch)
	if err != nil {
		return "", err
	}
	return c.PostAttestation(ctx, att)
}

// Resource fetches "repo/type/tag" with the session cookie (or, if bearer
// is non-empty, with "Authorization: Bearer <bearer>") and decrypts the
// JWE with the client key.
func (c *Client) Resource(ctx context.Context, path, bearer string) ([]byte, error) {
	raw, err := c.FetchResource(ctx, path, bearer)
	if err != nil {
		return nil, err
	}
	return c.Decrypt(raw)
}

// FetchResource is Resource without decryption: it returns the JWE
// (flattened JSON serialization) as received.
func (c *Client) FetchResource(ctx context.Context, path, bearer string) ([]byte, error) {
	var raw json.RawMessage
	if err := c.do(ctx, http.MethodGet, protocol.PathResource+path, nil, bearer, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// Decrypt decrypts a resource JWE with the client key.
func (c *Client) Decrypt(jweJSON []byte) ([]byte, error) {
	return jwe.Decrypt(jweJSON, c.key)
}

// do sends a JSON request and decodes a JSON response into out.
func (c *Client) do(ctx context.Context, method, path string, in any, bearer string, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		re := &ResponseError{Op: method + " " + path, Status: resp.StatusCode, Body: b}
		if len(re.Body) > 64<<10 {
			re.Body = re.Body[:64<<10]
		}
		re.Problem, _ = problem.Decode(b)
		return re
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}
