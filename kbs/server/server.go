// Package server is cc-kbs's HTTP API: Trustee's KBS protocol v0.4.0
// (POST /kbs/v0/auth, POST /kbs/v0/attest, GET /kbs/v0/resource/<repo>/
// <type>/<tag>) and the admin API (Trustee's POST /kbs/v0/resource/...,
// /kbs/v0/attestation-policy and /kbs/v0/resource-policy, plus Coffer's
// /kbs/v0/admin/...), with RFC 7807 problem responses (kbs/problem).
//
// The request flow follows trustee kbs/src/api_server.rs and
// kbs/src/attestation/backend.rs, with these differences: evidence is
// verified in-process by attestation.Verifier implementations; a nonce is
// single-use (a second /attest on a session fails, where Trustee returns
// the old token); a token is issued only for an affirming appraisal;
// sessions bind the attested tee-pubkey and resources are encrypted to it.
//
// Routing is done on the escaped request path before anything else, so a
// resource path is validated in the form the client sent (no "..", no
// percent-encoding) and never cleaned or redirected by net/http.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/containerd/log"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/kbs/admin"
	"github.com/cofferhq/coffer/kbs/problem"
	"github.com/cofferhq/coffer/kbs/protocol"
	"github.com/cofferhq/coffer/kbs/refvalues"
	"github.com/cofferhq/coffer/kbs/session"
	"github.com/cofferhq/coffer/kbs/store"
	"github.com/cofferhq/coffer/kbs/token"
)

// DefaultMaxBody is the default request body limit: 1 MiB.
const DefaultMaxBody = 1 << 20

// Config is everything a Server needs; the caller builds and owns each
// part (no globals).
type Config struct {
	// Verifiers are the enabled TEEs. A TEE missing here is refused at
	// /auth with problem tee-not-enabled; in particular sim is present only
	// if the configuration names the sim root.
	Verifiers map[attestation.TEE]attestation.Verifier
	// Store holds resources, policies, reference values and the audit log.
	Store *store.Store
	// Sessions is the RCAR session table.
	Sessions *session.Store
	// Tokens signs and verifies attestation tokens.
	Tokens *token.Signer
	// Admin verifies admin tokens. Nil disables the admin API (every admin
	// call fails with admin-unauthenticated).
	Admin *admin.Verifier
	// DefaultAttestationPolicy and DefaultResourcePolicy are stored as
	// version 1 when the store has none (configs/kbs/*.rego).
	DefaultAttestationPolicy string
	DefaultResourcePolicy    string
	// SNPMinTCB and TDXMinTeeTCBSVN (32 hex) are the configured TCB floors
	// the attestation policy sees as tcb_floor when the reference values
	// set none. Nil / "" mean no floor.
	SNPMinTCB       *refvalues.TCB
	TDXMinTeeTCBSVN string
	// MaxBody bounds request bodies, bytes; 0 means DefaultMaxBody.
	MaxBody int64
	// Now is the clock for verification; nil means time.Now.
	Now func() time.Time
	// VerifierID names this KBS in tokens ("ear.verifier-id").
	VerifierBuild string
}

// Server serves the KBS API. It is safe for concurrent use.
type Server struct {
	cfg Config

	// adminMu serialises admin updates so compile → store → swap of
	// policies and reference values happen in store order.
	adminMu sync.Mutex

	mu        sync.RWMutex
	att       *attestationPolicy
	res       *resourcePolicy
	refValues refvalues.Values
	refDoc    store.Document
}

// New returns a Server, loading the current policies and reference values
// from the store and storing the defaults as version 1 where none exist.
// It fails if a stored or default policy does not compile.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Sessions == nil || cfg.Tokens == nil {
		return nil, errors.New("create KBS server: Store, Sessions and Tokens are required")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.VerifierBuild == "" {
		cfg.VerifierBuild = "cc-kbs"
	}
	s := &Server{cfg: cfg}
	if err := s.loadState(ctx); err != nil {
		return nil, fmt.Errorf("create KBS server: %w", err)
	}
	return s, nil
}

// ServeHTTP routes a request. Paths are matched on the escaped form.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.EscapedPath()
	switch {
	case path == protocol.PathAuth:
		s.only(w, r, http.MethodPost, s.handleAuth)
	case path == protocol.PathAttest:
		s.only(w, r, http.MethodPost, s.handleAttest)
	case strings.HasPrefix(path, protocol.PathResource):
		switch r.Method {
		case http.MethodGet:
			s.handleResource(w, r)
		case http.MethodPost, http.MethodPut:
			s.handleAdminSetResource(w, r)
		default:
			methodNotAllowed(w, r, "GET, POST")
		}
	case path == protocol.PathAttestationPolicy:
		s.handleAdminPolicy(w, r, store.KindAttestationPolicy)
	case path == protocol.PathResourcePolicy:
		s.handleAdminPolicy(w, r, store.KindResourcePolicy)
	case strings.HasPrefix(path, protocol.PathAdmin):
		s.handleAdmin(w, r, strings.TrimPrefix(path, protocol.PathAdmin))
	default:
		problem.Write(w, problem.New(problem.NotFound, fmt.Sprintf("no KBS endpoint at %s %q: the KBS serves %s, %s and %s<repo>/<type>/<tag>",
			r.Method, path, protocol.PathAuth, protocol.PathAttest, protocol.PathResource)))
	}
}

func (s *Server) only(w http.ResponseWriter, r *http.Request, method string, h http.HandlerFunc) {
	if r.Method != method {
		methodNotAllowed(w, r, method)
		return
	}
	h(w, r)
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allowed string) {
	w.Header().Set("Allow", allowed)
	problem.Write(w, problem.New(problem.MethodNotAllowed, fmt.Sprintf("%s is not allowed on %s: use %s", r.Method, r.URL.EscapedPath(), allowed)))
}

// readBody reads at most MaxBody bytes of r's body.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *problem.Problem) {
	if r.ContentLength > s.cfg.MaxBody {
		return nil, problem.New(problem.BodyTooLarge, fmt.Sprintf("request body is %d bytes: the limit is %d", r.ContentLength, s.cfg.MaxBody))
	}
	// Size the buffer from Content-Length (already bounded above), so an
	// attestation body of a few KiB is read without regrowing.
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody))
	body := buf.Bytes()
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, problem.New(problem.BodyTooLarge, fmt.Sprintf("request body exceeds the limit of %d bytes", mbe.Limit))
		}
		return nil, problem.New(problem.BadRequest, fmt.Sprintf("read request body: %v", err))
	}
	return body, nil
}

// readJSON reads r's body (at most MaxBody bytes) and decodes exactly one
// JSON value from it into v (see decodeJSON). On failure it writes the
// problem and returns false.
func (s *Server) readJSON(w http.ResponseWriter, r *http.Request, v any, strict bool, what string) bool {
	body, p := s.readBody(w, r)
	if p == nil {
		p = decodeJSON(body, v, strict, what)
	}
	if p != nil {
		problem.Write(w, p)
		return false
	}
	return true
}

// decodeJSON decodes exactly one JSON value from body into v. strict
// refuses unknown object members (admin API); the protocol endpoints
// tolerate them, as Trustee's serde types do.
func decodeJSON(body []byte, v any, strict bool, what string) *problem.Problem {
	if len(bytes.TrimSpace(body)) == 0 {
		return problem.New(problem.MalformedJSON, fmt.Sprintf("%s body is empty: want a JSON object", what))
	}
	d := json.NewDecoder(bytes.NewReader(body))
	if strict {
		d.DisallowUnknownFields()
	}
	if err := d.Decode(v); err != nil {
		return problem.New(problem.MalformedJSON, fmt.Sprintf("parse %s body: %v", what, err))
	}
	if _, err := d.Token(); err != io.EOF {
		return problem.New(problem.MalformedJSON, fmt.Sprintf("parse %s body: trailing data after the JSON value", what))
	}
	return nil
}

// writeJSON sends v as application/json with status 200.
func writeJSON(ctx context.Context, w http.ResponseWriter, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		log.G(ctx).WithError(err).Error("kbs: encode response")
		problem.Write(w, problem.New(problem.Internal, "encode response failed; see the KBS log"))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
}

// internal logs err and sends an internal problem without its details.
func internal(ctx context.Context, w http.ResponseWriter, what string, err error) {
	log.G(ctx).WithError(err).Errorf("kbs: %s", what)
	problem.Write(w, problem.New(problem.Internal, what+" failed; see the KBS log"))
}
