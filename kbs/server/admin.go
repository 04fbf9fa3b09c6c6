package server

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/cofferhq/coffer/kbs/policy"
	"github.com/cofferhq/coffer/kbs/problem"
	"github.com/cofferhq/coffer/kbs/protocol"
	"github.com/cofferhq/coffer/kbs/refvalues"
	"github.com/cofferhq/coffer/kbs/store"
)

// Coffer admin endpoints under /kbs/v0/admin/.
const (
	AdminReferenceValues = "reference-values"
	AdminHistory         = "history"
	AdminAudit           = "audit"
	AdminResources       = "resources"
	AdminResource        = "resource/"
)

func viewOf(d store.Document) protocol.DocumentView {
	v := protocol.DocumentView{Kind: string(d.Kind), Version: d.Version, Time: d.Time, SHA256: d.SHA256, Actor: d.Actor, ID: policyID(d), Content: string(d.Content)}
	if d.Kind == store.KindReferenceValues {
		v.Values, _ = refvalues.Parse(d.Content)
	}
	return v
}

// adminAuth checks the admin bearer token and returns its subject.
func (s *Server) adminAuth(w http.ResponseWriter, r *http.Request) (string, bool) {
	if s.cfg.Admin == nil {
		problem.Write(w, problem.New(problem.AdminUnauthenticated, "the admin API is disabled: configure [admin] public_key"))
		return "", false
	}
	c, err := s.cfg.Admin.Verify(r.Header.Get("Authorization"))
	if err != nil {
		log.G(r.Context()).WithError(err).WithField("path", r.URL.EscapedPath()).Warn("kbs: admin authentication failed")
		problem.Write(w, problem.New(problem.AdminUnauthenticated, err.Error()))
		return "", false
	}
	if c.Subject == "" {
		return "admin", true
	}
	return c.Subject, true
}

// handleAdminSetResource serves POST/PUT /kbs/v0/resource/<repo>/<type>/<tag>
// (Trustee's resource registration): the body is the raw value.
func (s *Server) handleAdminSetResource(w http.ResponseWriter, r *http.Request) {
	actor, ok := s.adminAuth(w, r)
	if !ok {
		return
	}
	rp, p := parseResourcePath(r, protocol.PathResource)
	if p != nil {
		problem.Write(w, p)
		return
	}
	body, p := s.readBody(w, r)
	if p != nil {
		problem.Write(w, p)
		return
	}
	meta, err := s.cfg.Store.PutResource(rp.String(), body, actor)
	if err != nil {
		internal(r.Context(), w, "store resource", err)
		return
	}
	log.G(r.Context()).WithField("resource", rp.String()).WithField("version", meta.Version).WithField("actor", actor).Info("kbs: resource set")
	writeJSON(r.Context(), w, meta)
}

// handleAdminPolicy serves GET and POST on /kbs/v0/attestation-policy and
// /kbs/v0/resource-policy. POST takes Trustee's bodies: {"type": "rego",
// "policy_id": "default", "policy": "<base64>"} and {"policy": "<base64>"}.
func (s *Server) handleAdminPolicy(w http.ResponseWriter, r *http.Request, kind store.Kind) {
	switch r.Method {
	case http.MethodGet:
		if _, ok := s.adminAuth(w, r); !ok {
			return
		}
		d, err := s.cfg.Store.Document(kind)
		if err != nil {
			internal(r.Context(), w, "read "+string(kind), err)
			return
		}
		writeJSON(r.Context(), w, viewOf(d))
	case http.MethodPost:
		actor, ok := s.adminAuth(w, r)
		if !ok {
			return
		}
		var req protocol.SetPolicyRequest
		if !s.readJSON(w, r, &req, true, string(kind)+" request") {
			return
		}
		if req.Type != "" && !strings.EqualFold(req.Type, "rego") {
			problem.Write(w, problem.New(problem.BadRequest, fmt.Sprintf("policy type %q is not supported: want \"rego\"", req.Type)))
			return
		}
		if req.PolicyID != "" && req.PolicyID != "default" {
			problem.Write(w, problem.New(problem.BadRequest, fmt.Sprintf("policy_id %q: this KBS has one policy per layer, use \"default\" or omit it", req.PolicyID)))
			return
		}
		src, err := protocol.DecodeBase64(req.Policy)
		if err != nil || len(src) == 0 {
			problem.Write(w, problem.New(problem.BadRequest, "policy must be the non-empty base64 of the Rego source"))
			return
		}
		d, p := s.setPolicy(r, kind, string(src), actor)
		if p != nil {
			problem.Write(w, p)
			return
		}
		writeJSON(r.Context(), w, viewOf(d))
	default:
		methodNotAllowed(w, r, "GET, POST")
	}
}

// setPolicy compiles src, stores it as the next version and swaps it in.
func (s *Server) setPolicy(r *http.Request, kind store.Kind, src, actor string) (store.Document, *problem.Problem) {
	ctx := r.Context()
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	invalid := func(err error) *problem.Problem {
		pr := problem.New(problem.InvalidPolicy, err.Error())
		pr.Policy = strings.TrimSuffix(string(kind), "-policy")
		return pr
	}
	switch kind {
	case store.KindAttestationPolicy:
		ap, err := policy.CompileAttestation(ctx, src)
		if err != nil {
			return store.Document{}, invalid(err)
		}
		d, err := s.cfg.Store.PutDocument(kind, []byte(src), actor)
		if err != nil {
			return store.Document{}, problem.New(problem.Internal, "store attestation policy failed: "+err.Error())
		}
		s.mu.Lock()
		s.att = &attestationPolicy{p: ap, doc: d}
		s.mu.Unlock()
		log.G(ctx).WithField("id", policyID(d)).WithField("actor", actor).Info("kbs: attestation policy set")
		return d, nil
	default:
		rp, err := policy.CompileResource(ctx, src)
		if err != nil {
			return store.Document{}, invalid(err)
		}
		d, err := s.cfg.Store.PutDocument(kind, []byte(src), actor)
		if err != nil {
			return store.Document{}, problem.New(problem.Internal, "store resource policy failed: "+err.Error())
		}
		s.mu.Lock()
		s.res = &resourcePolicy{p: rp, doc: d}
		s.mu.Unlock()
		log.G(ctx).WithField("id", policyID(d)).WithField("actor", actor).Info("kbs: resource policy set")
		return d, nil
	}
}

// handleAdmin serves Coffer's /kbs/v0/admin/<rest> endpoints.
func (s *Server) handleAdmin(w http.ResponseWriter, r *http.Request, rest string) {
	actor, ok := s.adminAuth(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	switch {
	case rest == AdminReferenceValues:
		s.handleReferenceValues(w, r, actor)
	case rest == AdminHistory:
		if r.Method != http.MethodGet {
			methodNotAllowed(w, r, "GET")
			return
		}
		kind := store.Kind(r.URL.Query().Get("kind"))
		if !kind.Valid() {
			problem.Write(w, problem.New(problem.BadRequest, fmt.Sprintf("history kind %q: want one of %v", kind, store.Kinds)))
			return
		}
		docs, err := s.cfg.Store.History(kind)
		if err != nil {
			internal(ctx, w, "read history", err)
			return
		}
		views := make([]protocol.DocumentView, 0, len(docs))
		for _, d := range docs {
			views = append(views, viewOf(d))
		}
		writeJSON(ctx, w, views)
	case rest == AdminAudit:
		if r.Method != http.MethodGet {
			methodNotAllowed(w, r, "GET")
			return
		}
		limit := 0
		if l := r.URL.Query().Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 0 {
				problem.Write(w, problem.New(problem.BadRequest, fmt.Sprintf("limit %q: want a non-negative integer", l)))
				return
			}
			limit = n
		}
		entries, err := s.cfg.Store.Audit(limit)
		if err != nil {
			internal(ctx, w, "read audit log", err)
			return
		}
		writeJSON(ctx, w, entries)
	case rest == AdminResources:
		if r.Method != http.MethodGet {
			methodNotAllowed(w, r, "GET")
			return
		}
		metas, err := s.cfg.Store.ListResources()
		if err != nil {
			internal(ctx, w, "list resources", err)
			return
		}
		if metas == nil {
			metas = []store.ResourceMeta{}
		}
		writeJSON(ctx, w, metas)
	case strings.HasPrefix(rest, AdminResource):
		if r.Method != http.MethodGet {
			methodNotAllowed(w, r, "GET")
			return
		}
		rp, p := parseResourcePath(r, protocol.PathAdmin+AdminResource)
		if p != nil {
			problem.Write(w, p)
			return
		}
		value, meta, err := s.cfg.Store.GetResource(rp.String())
		if err != nil {
			if errors.Is(err, errdefs.ErrNotFound) {
				problem.Write(w, problem.New(problem.NotFound, err.Error()))
				return
			}
			internal(ctx, w, "read resource", err)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Cache-Control", "no-store")
		h.Set("ETag", `"sha256:`+meta.SHA256+`"`)
		h.Set("X-Resource-Version", strconv.FormatUint(meta.Version, 10))
		_, _ = w.Write(value)
	default:
		problem.Write(w, problem.New(problem.NotFound, fmt.Sprintf("no admin endpoint %q: want %s, %s, %s, %s or %s<repo>/<type>/<tag>",
			rest, AdminReferenceValues, AdminHistory, AdminAudit, AdminResources, AdminResource)))
	}
}

// handleReferenceValues serves /kbs/v0/admin/reference-values: GET the
// current document, POST {"tee", "measurement"} or {"tee", "init_data"} to
// add one measurement or trusted init-data digest, PUT a whole document to
// replace it.
func (s *Server) handleReferenceValues(w http.ResponseWriter, r *http.Request, actor string) {
	ctx := r.Context()
	switch r.Method {
	case http.MethodGet:
		d, err := s.cfg.Store.Document(store.KindReferenceValues)
		if errors.Is(err, errdefs.ErrNotFound) {
			writeJSON(ctx, w, protocol.DocumentView{Kind: string(store.KindReferenceValues), Content: "{}", Values: refvalues.Values{}})
			return
		}
		if err != nil {
			internal(ctx, w, "read reference values", err)
			return
		}
		writeJSON(ctx, w, viewOf(d))
	case http.MethodPost, http.MethodPut:
		body, p := s.readBody(w, r)
		if p != nil {
			problem.Write(w, p)
			return
		}
		if r.Method == http.MethodPost {
			var e refvalues.Entry
			if p := decodeJSON(body, &e, true, "reference value"); p != nil {
				problem.Write(w, p)
				return
			}
			if err := e.Check(); err != nil {
				problem.Write(w, problem.New(problem.BadRequest, err.Error()))
				return
			}
			s.updateReferenceValues(w, r, actor, func(cur refvalues.Values) (refvalues.Values, error) {
				_, err := cur.Add(e)
				return cur, err
			})
			return
		}
		if len(strings.TrimSpace(string(body))) == 0 {
			problem.Write(w, problem.New(problem.MalformedJSON, "reference values body is empty: send the whole document, {} to clear it"))
			return
		}
		next, err := refvalues.Parse(body)
		if err != nil {
			problem.Write(w, problem.New(problem.BadRequest, err.Error()))
			return
		}
		s.updateReferenceValues(w, r, actor, func(refvalues.Values) (refvalues.Values, error) { return next, nil })
	default:
		methodNotAllowed(w, r, "GET, POST, PUT")
	}
}

func (s *Server) updateReferenceValues(w http.ResponseWriter, r *http.Request, actor string, fn func(refvalues.Values) (refvalues.Values, error)) {
	ctx := r.Context()
	s.adminMu.Lock()
	defer s.adminMu.Unlock()
	var result refvalues.Values
	d, err := s.cfg.Store.UpdateDocument(store.KindReferenceValues, actor, func(cur []byte, _ bool) ([]byte, error) {
		v, err := refvalues.Parse(cur)
		if err != nil {
			return nil, err
		}
		if v, err = fn(v); err != nil {
			return nil, err
		}
		result = v
		return v.Marshal(), nil
	})
	if err != nil {
		if errors.Is(err, refvalues.ErrInvalid) {
			problem.Write(w, problem.New(problem.BadRequest, err.Error()))
			return
		}
		internal(ctx, w, "update reference values", err)
		return
	}
	s.mu.Lock()
	s.refValues, s.refDoc = result, d
	s.mu.Unlock()
	log.G(ctx).WithField("id", policyID(d)).WithField("actor", actor).Info("kbs: reference values set")
	writeJSON(ctx, w, viewOf(d))
}
