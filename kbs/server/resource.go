package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/cofferhq/coffer/kbs/jwe"
	"github.com/cofferhq/coffer/kbs/policy"
	"github.com/cofferhq/coffer/kbs/problem"
	"github.com/cofferhq/coffer/kbs/protocol"
	"github.com/cofferhq/coffer/kbs/resourcepath"
	"github.com/cofferhq/coffer/kbs/session"
	"github.com/cofferhq/coffer/kbs/token"
)

// parseResourcePath validates the escaped path after /kbs/v0/resource/.
func parseResourcePath(r *http.Request, prefix string) (resourcepath.Path, *problem.Problem) {
	rp, err := resourcepath.Parse(strings.TrimPrefix(r.URL.EscapedPath(), prefix))
	if err != nil {
		return resourcepath.Path{}, problem.New(problem.InvalidResourcePath, err.Error())
	}
	return rp, nil
}

// handleResource serves GET /kbs/v0/resource/<repo>/<type>/<tag>: the
// path is validated first, then the caller authenticated (attested session
// cookie or bearer attestation token), then the resource policy decides,
// and only then is the store read and the value encrypted to the attested
// tee-pubkey (trustee kbs/src/api_server.rs, plugin "resource").
func (s *Server) handleResource(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rp, p := parseResourcePath(r, protocol.PathResource)
	if p != nil {
		problem.Write(w, p)
		return
	}
	payload, pubJWK, p := s.credential(r)
	if p != nil {
		problem.Write(w, p)
		return
	}
	claims, err := token.DecodePayload(payload)
	if err != nil {
		problem.Write(w, problem.New(problem.Unauthenticated, err.Error()))
		return
	}
	_, resPol, _ := s.snapshot()
	dec, err := resPol.p.Evaluate(ctx, &policy.ResourceInput{
		Claims: claims,
		Request: policy.Request{Plugin: "resource", ResourcePath: rp.Segments(),
			Repository: rp.Repository, Type: rp.Type, Tag: rp.Tag},
	})
	if err != nil {
		internal(ctx, w, "evaluate resource policy "+policyID(resPol.doc), err)
		return
	}
	if !dec.Allow {
		pr := problem.New(problem.PolicyDenied, fmt.Sprintf("resource policy %s rule allow is false for resource %s", policyID(resPol.doc), rp))
		pr.Policy, pr.Rule, pr.Reasons = "resource", "allow", dec.Reasons
		log.G(ctx).WithField("resource", rp.String()).WithField("reasons", dec.Reasons).Info("kbs: resource denied by policy")
		problem.Write(w, pr)
		return
	}
	value, _, err := s.cfg.Store.GetResource(rp.String())
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			problem.Write(w, problem.New(problem.NotFound, fmt.Sprintf("resource %s does not exist: set it with `ccctl kbs resource set %s`", rp, rp)))
			return
		}
		internal(ctx, w, "read resource", err)
		return
	}
	key, err := jwe.ParseKey(pubJWK)
	if err != nil {
		problem.Write(w, problem.New(problem.UnsupportedKey, err.Error()))
		return
	}
	out, err := jwe.Encrypt(key, value)
	if err != nil {
		internal(ctx, w, "encrypt resource", err)
		return
	}
	log.G(ctx).WithField("resource", rp.String()).Info("kbs: resource released")
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(out)
}

// credential returns the token payload and tee-pubkey JWK of the caller:
// from an attested, unexpired session named by the cookie, else from a
// valid bearer attestation token.
func (s *Server) credential(r *http.Request) (payload, pubJWK []byte, p *problem.Problem) {
	var cookieErr error
	if c, err := r.Cookie(protocol.SessionCookie); err == nil {
		sess, err := s.cfg.Sessions.Attested(c.Value)
		if err == nil {
			return sess.Payload, sess.TEEPubKey, nil
		}
		cookieErr = err
	}
	if authz := r.Header.Get("Authorization"); authz != "" {
		scheme, raw, ok := strings.Cut(authz, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(raw) == "" {
			return nil, nil, problem.New(problem.Unauthenticated, "Authorization header is not \"Bearer <attestation token>\"")
		}
		payload, err := s.cfg.Tokens.Verify(strings.TrimSpace(raw))
		if err != nil {
			return nil, nil, problem.New(problem.Unauthenticated, err.Error())
		}
		pub, err := token.TEEPubKey(payload)
		if err != nil {
			return nil, nil, problem.New(problem.Unauthenticated, err.Error())
		}
		return payload, pub, nil
	}
	if cookieErr != nil {
		if errors.Is(cookieErr, session.ErrExpired) || errors.Is(cookieErr, session.ErrNotAttested) {
			return nil, nil, sessionProblem(cookieErr)
		}
		return nil, nil, sessionProblem(session.ErrUnknown)
	}
	return nil, nil, problem.New(problem.Unauthenticated, "no attested kbs-session-id cookie and no \"Authorization: Bearer <attestation token>\": run the RCAR handshake (/auth, /attest) first")
}
