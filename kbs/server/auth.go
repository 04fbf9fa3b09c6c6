package server

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/containerd/log"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/kbs/problem"
	"github.com/cofferhq/coffer/kbs/protocol"
	"github.com/cofferhq/coffer/kbs/session"
)

// handleAuth serves POST /kbs/v0/auth: Request → session cookie +
// Challenge (trustee kbs/src/attestation/backend.rs __auth).
func (s *Server) handleAuth(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var req protocol.Request
	if !s.readJSON(w, r, &req, false, "auth request") {
		return
	}
	if err := protocol.CheckVersion(req.Version); err != nil {
		problem.Write(w, problem.New(problem.UnsupportedVersion, err.Error()))
		return
	}
	tee, ok := protocol.ParseTEE(req.TEE)
	if !ok {
		problem.Write(w, problem.New(problem.TEENotEnabled, fmt.Sprintf("tee %q is not a TEE this KBS knows: want one of %s", req.TEE, s.enabledTEEs())))
		return
	}
	if _, ok := s.cfg.Verifiers[tee]; !ok {
		detail := fmt.Sprintf("tee %q is not enabled on this KBS (enabled: %s)", tee, s.enabledTEEs())
		if tee == attestation.TEESim {
			detail += "; sim evidence is accepted only when the KBS configuration names the sim root ([tee.sim] root_pem)"
		}
		problem.Write(w, problem.New(problem.TEENotEnabled, detail))
		return
	}
	alg, extra, err := protocol.SelectHash(req.ExtraParams)
	if err != nil {
		problem.Write(w, problem.New(problem.BadRequest, err.Error()))
		return
	}
	sess, err := s.cfg.Sessions.Create(tee, alg)
	if err != nil {
		if errors.Is(err, session.ErrFull) {
			problem.Write(w, problem.New(problem.TooManySessions, err.Error()+"; retry later"))
			return
		}
		internal(ctx, w, "create session", err)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name:    protocol.SessionCookie,
		Value:   sess.ID,
		Path:    protocol.PathPrefix,
		Expires: sess.Expires,
		// Max-Age wins over Expires (RFC 6265 §5.3) and is immune to
		// clock skew between guest and KBS.
		MaxAge:   int(s.cfg.Sessions.TTL() / time.Second),
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
	log.G(ctx).WithField("tee", tee).WithField("hash", alg).Debug("kbs: session created")
	writeJSON(ctx, w, protocol.Challenge{Nonce: sess.Nonce, ExtraParams: extra})
}

func (s *Server) enabledTEEs() string {
	names := make([]string, 0, len(s.cfg.Verifiers))
	for t := range s.cfg.Verifiers {
		names = append(names, string(t))
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
