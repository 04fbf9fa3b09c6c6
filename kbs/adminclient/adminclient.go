// Package adminclient calls cc-kbs's admin API, signing a short-lived
// Ed25519 admin JWT (kbs/admin) for every request. ccctl kbs uses it.
package adminclient

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cofferhq/coffer/kbs/admin"
	"github.com/cofferhq/coffer/kbs/client"
	"github.com/cofferhq/coffer/kbs/problem"
	"github.com/cofferhq/coffer/kbs/protocol"
	"github.com/cofferhq/coffer/kbs/refvalues"
	"github.com/cofferhq/coffer/kbs/resourcepath"
)

// Document kinds, as the admin API names them.
const (
	KindAttestationPolicy = "attestation-policy"
	KindResourcePolicy    = "resource-policy"
	KindReferenceValues   = "reference-values"
)

// Options configure a Client.
type Options struct {
	// HTTPClient sends requests; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Subject is the admin token "sub", recorded in the audit log.
	// Default "admin".
	Subject string
	// TTL is each token's lifetime. Default 5 minutes.
	TTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Client is an admin API client. It is safe for concurrent use.
type Client struct {
	base string
	key  ed25519.PrivateKey
	o    Options
}

// New returns a Client for the KBS at baseURL signing with key.
func New(baseURL string, key ed25519.PrivateKey, o Options) *Client {
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	if o.Subject == "" {
		o.Subject = "admin"
	}
	if o.TTL <= 0 {
		o.TTL = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), key: key, o: o}
}

// SetResource stores value at path ("repo/type/tag").
func (c *Client) SetResource(ctx context.Context, path string, value []byte) (*protocol.ResourceMeta, error) {
	if _, err := resourcepath.FromString(path); err != nil {
		return nil, err
	}
	var m protocol.ResourceMeta
	if err := c.do(ctx, http.MethodPost, protocol.PathResource+path, "application/octet-stream", value, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// GetResource returns the value at path.
func (c *Client) GetResource(ctx context.Context, path string) ([]byte, error) {
	if _, err := resourcepath.FromString(path); err != nil {
		return nil, err
	}
	var raw rawBody
	if err := c.do(ctx, http.MethodGet, protocol.PathAdmin+"resource/"+path, "", nil, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// ListResources returns every resource's metadata.
func (c *Client) ListResources(ctx context.Context) ([]protocol.ResourceMeta, error) {
	var out []protocol.ResourceMeta
	return out, c.do(ctx, http.MethodGet, protocol.PathAdmin+"resources", "", nil, &out)
}

// SetPolicy uploads Rego source as the attestation or resource policy
// (kind KindAttestationPolicy or KindResourcePolicy), in Trustee's body
// format.
func (c *Client) SetPolicy(ctx context.Context, kind string, src []byte) (*protocol.DocumentView, error) {
	path, err := policyPath(kind)
	if err != nil {
		return nil, err
	}
	req := protocol.SetPolicyRequest{Policy: base64.StdEncoding.EncodeToString(src)}
	if kind == KindAttestationPolicy {
		req.Type, req.PolicyID = "rego", "default"
	}
	body, _ := json.Marshal(req)
	var v protocol.DocumentView
	if err := c.do(ctx, http.MethodPost, path, "application/json", body, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Policy returns the current version of a policy.
func (c *Client) Policy(ctx context.Context, kind string) (*protocol.DocumentView, error) {
	path, err := policyPath(kind)
	if err != nil {
		return nil, err
	}
	var v protocol.DocumentView
	return &v, c.do(ctx, http.MethodGet, path, "", nil, &v)
}

// History returns every version of kind, oldest first.
func (c *Client) History(ctx context.Context, kind string) ([]protocol.DocumentView, error) {
	var out []protocol.DocumentView
	return out, c.do(ctx, http.MethodGet, protocol.PathAdmin+"history?kind="+url.QueryEscape(kind), "", nil, &out)
}

// AddReferenceValue adds one measurement.
func (c *Client) AddReferenceValue(ctx context.Context, e refvalues.Entry) (*protocol.DocumentView, error) {
	body, _ := json.Marshal(e)
	var v protocol.DocumentView
	return &v, c.do(ctx, http.MethodPost, protocol.PathAdmin+"reference-values", "application/json", body, &v)
}

// SetReferenceValues replaces the whole reference-values document.
func (c *Client) SetReferenceValues(ctx context.Context, doc []byte) (*protocol.DocumentView, error) {
	var v protocol.DocumentView
	return &v, c.do(ctx, http.MethodPut, protocol.PathAdmin+"reference-values", "application/json", doc, &v)
}

// ReferenceValues returns the current reference values.
func (c *Client) ReferenceValues(ctx context.Context) (*protocol.DocumentView, error) {
	var v protocol.DocumentView
	return &v, c.do(ctx, http.MethodGet, protocol.PathAdmin+"reference-values", "", nil, &v)
}

// Audit returns the last limit audit entries (all if 0).
func (c *Client) Audit(ctx context.Context, limit int) ([]protocol.AuditEntry, error) {
	var out []protocol.AuditEntry
	return out, c.do(ctx, http.MethodGet, protocol.PathAdmin+"audit?limit="+strconv.Itoa(limit), "", nil, &out)
}

func policyPath(kind string) (string, error) {
	switch kind {
	case KindAttestationPolicy:
		return protocol.PathAttestationPolicy, nil
	case KindResourcePolicy:
		return protocol.PathResourcePolicy, nil
	}
	return "", fmt.Errorf("policy kind %q: want %q or %q", kind, "attestation", "resource")
}

// rawBody receives a non-JSON response body.
type rawBody []byte

func (c *Client) do(ctx context.Context, method, path, contentType string, body []byte, out any) error {
	tok, err := admin.Sign(c.key, c.o.Subject, c.o.Now(), c.o.TTL)
	if err != nil {
		return err
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.o.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		re := &client.ResponseError{Op: method + " " + path, Status: resp.StatusCode, Body: b}
		re.Problem, _ = problem.Decode(b)
		return re
	}
	if rb, ok := out.(*rawBody); ok {
		*rb = b
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}
