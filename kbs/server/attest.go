package server

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/containerd/log"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/reportdata"
	"github.com/cofferhq/coffer/kbs/ear"
	"github.com/cofferhq/coffer/kbs/initdata"
	"github.com/cofferhq/coffer/kbs/jwe"
	"github.com/cofferhq/coffer/kbs/policy"
	"github.com/cofferhq/coffer/kbs/problem"
	"github.com/cofferhq/coffer/kbs/protocol"
	"github.com/cofferhq/coffer/kbs/session"
	"github.com/cofferhq/coffer/kbs/token"
)

// handleAttest serves POST /kbs/v0/attest: Attestation → token.
//
// Order: parse the body, the tee-pubkey, the evidence and the init-data (a
// malformed request does not consume the nonce); then look the session up
// and consume its nonce (single use, whatever follows); then verify the
// init-data binding, the evidence with REPORT_DATA = hash of the runtime
// data (binding nonce and tee-pubkey, so evidence relayed for another key
// fails check report_data), run the attestation policy, and issue a token
// only for an affirming appraisal.
func (s *Server) handleAttest(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	body, p := s.readBody(w, r)
	if p != nil {
		problem.Write(w, p)
		return
	}
	att, err := protocol.DecodeAttestationBody(body)
	if err != nil {
		problem.Write(w, problem.New(problem.MalformedJSON, err.Error()))
		return
	}
	if att.RuntimeData.Nonce == "" {
		problem.Write(w, problem.New(problem.BadRequest, "runtime-data.nonce is missing: send the nonce from the /auth challenge"))
		return
	}
	key, err := jwe.ParseKey(att.RuntimeData.TEEPubKey)
	if err != nil {
		problem.Write(w, problem.New(problem.UnsupportedKey, err.Error()))
		return
	}
	if att.EvidenceErr != nil {
		problem.Write(w, problem.New(problem.BadRequest, att.EvidenceErr.Error()))
		return
	}
	evidence := att.Evidence
	input, err := decodeEvidence(evidence)
	if err != nil {
		problem.Write(w, problem.New(problem.BadRequest, err.Error()))
		return
	}
	var idResult *initdata.Result
	if att.InitData != nil {
		if idResult, err = initdata.Parse(att.InitData); err != nil {
			problem.Write(w, problem.New(problem.BadRequest, err.Error()))
			return
		}
	}

	c, err := r.Cookie(protocol.SessionCookie)
	if err != nil {
		problem.Write(w, problem.New(problem.Unauthenticated, "no kbs-session-id cookie: POST /kbs/v0/auth first and send its cookie with /attest"))
		return
	}
	sess, err := s.cfg.Sessions.BeginAttest(c.Value, att.RuntimeData.Nonce)
	if err != nil {
		problem.Write(w, sessionProblem(err))
		return
	}
	verifier, ok := s.cfg.Verifiers[sess.TEE]
	if !ok { // cannot happen: /auth checked it and the map is fixed
		problem.Write(w, problem.New(problem.TEENotEnabled, fmt.Sprintf("tee %q is not enabled on this KBS", sess.TEE)))
		return
	}

	opts := attestation.VerifyOptions{Now: s.cfg.Now()}
	if idResult != nil {
		opts.HostData = initdata.Fit(idResult.Digest, initdata.FieldSize(sess.TEE))
	}
	// REPORT_DATA binds the nonce, the tee-pubkey and the additional
	// evidence string as sent (Trustee kbs/src/attestation/backend.rs);
	// Coffer verifies no device evidence, so additional evidence is bound
	// but unverified, and the policy sees only that it was present.
	rd := reportdata.RuntimeData{Nonce: sess.Nonce, TeePubKey: &key.JWK, AdditionalEvidence: evidence.AdditionalEvidence}
	opts.ReportData, err = rd.Hash(sess.HashAlg)
	if err != nil {
		problem.Write(w, problem.New(problem.UnsupportedKey, err.Error()))
		return
	}

	var claims *attestation.Claims
	err = input.checkFormat(sess.TEE)
	if err == nil {
		claims, err = verifier.Verify(ctx, input.raw, opts)
	}
	if err != nil {
		check := attestation.FailedCheck(err)
		if check == "" {
			check = "verify"
		}
		pr := problem.New(problem.EvidenceInvalid, fmt.Sprintf("%s evidence failed check %q: %v", sess.TEE, check, err))
		pr.Check = check
		log.G(ctx).WithField("tee", sess.TEE).WithField("check", check).WithError(err).Info("kbs: evidence rejected")
		problem.Write(w, pr)
		return
	}
	if claims.TEE != sess.TEE { // a verifier must never claim another TEE
		pr := problem.New(problem.EvidenceInvalid, fmt.Sprintf("verifier for %s returned claims for tee %q", sess.TEE, claims.TEE))
		pr.Check = "tee"
		problem.Write(w, pr)
		return
	}

	attPol, _, refValues := s.snapshot()
	rv := refValues.For(sess.TEE)
	in := &policy.AttestationInput{
		TEE:             sess.TEE,
		Claims:          claims,
		TCB:             policy.TCBsOf(claims),
		TCBFloor:        policy.FloorOf(sess.TEE, rv, s.cfg.SNPMinTCB, s.cfg.TDXMinTeeTCBSVN),
		ReferenceValues: rv,
	}
	if idResult != nil {
		// The verifier has checked HOST_DATA / MRCONFIGID against this
		// digest (opts.HostData), so it is the init-data the TEE launched with.
		in.InitDataDigest = hex.EncodeToString(idResult.Digest)
		in.InitData = &policy.InitDataInput{Algorithm: idResult.Algorithm, Digest: in.InitDataDigest, Data: idResult.Data}
	}
	appraisal, err := attPol.p.Evaluate(ctx, in)
	if err != nil {
		internal(ctx, w, "evaluate attestation policy "+policyID(attPol.doc), err)
		return
	}
	status := appraisal.TrustVector.Status()
	if status != ear.StatusAffirming {
		pr := problem.New(problem.PolicyDenied, fmt.Sprintf("attestation policy %s appraised the %s evidence as %s (%s), want affirming",
			policyID(attPol.doc), sess.TEE, status, strings.Join(appraisal.TrustVector.NotAffirming(), ", ")))
		pr.Policy, pr.Rule, pr.Reasons = "attestation", "trust_claims", appraisal.Reasons
		log.G(ctx).WithField("tee", sess.TEE).WithField("status", status).WithField("reasons", appraisal.Reasons).Info("kbs: attestation denied by policy")
		problem.Write(w, pr)
		return
	}

	annotated := map[string]any{
		string(sess.TEE):    claims,
		token.KeyReportData: claims.ReportData,
		token.KeyRuntimeDataClaims: map[string]any{
			"nonce":            sess.Nonce,
			token.KeyTEEPubKey: json.RawMessage(att.RuntimeData.TEEPubKey),
		},
	}
	if idResult != nil {
		annotated[token.KeyInitData] = hex.EncodeToString(idResult.Digest)
		annotated[token.KeyInitDataClaims] = idResult.Data
	}
	tc := &token.Claims{
		VerifierID: ear.VerifierID{Build: s.cfg.VerifierBuild, Developer: "https://github.com/cofferhq/coffer"},
		Submods: map[string]ear.Appraisal{token.Submod: {
			Status:            status,
			TrustVector:       appraisal.TrustVector,
			PolicyID:          policyID(attPol.doc),
			AnnotatedEvidence: annotated,
		}},
	}
	tc.Subject = string(sess.TEE)
	tok, payload, _, err := s.cfg.Tokens.Issue(tc)
	if err != nil {
		internal(ctx, w, "issue attestation token", err)
		return
	}
	pub, err := compactJWK(key.JWK)
	if err != nil {
		internal(ctx, w, "encode tee-pubkey", err)
		return
	}
	if err := s.cfg.Sessions.CompleteAttest(sess.ID, pub, tok, payload); err != nil {
		problem.Write(w, sessionProblem(err))
		return
	}
	log.G(ctx).WithField("tee", sess.TEE).WithField("measurement", claims.Measurement).Info("kbs: attested")
	writeJSON(ctx, w, protocol.AttestationToken{Token: tok})
}

func compactJWK(k jose.JSONWebKey) ([]byte, error) { return k.MarshalJSON() }

// sessionProblem maps session.Store errors to problems.
func sessionProblem(err error) *problem.Problem {
	switch {
	case errors.Is(err, session.ErrExpired):
		return problem.New(problem.SessionExpired, err.Error()+": POST /kbs/v0/auth again")
	case errors.Is(err, session.ErrNonceUsed):
		return problem.New(problem.NonceReplay, "the nonce of this session was already used by an /attest call: nonces are single-use, POST /kbs/v0/auth for a new one")
	case errors.Is(err, session.ErrNonceMismatch):
		return problem.New(problem.NonceMismatch, "runtime-data.nonce is not the nonce issued to this session: send the nonce from this session's /auth challenge")
	case errors.Is(err, session.ErrNotAttested):
		return problem.New(problem.Unauthenticated, "the session has not completed /attest: attest first or send a bearer token")
	default:
		return problem.New(problem.Unauthenticated, "the kbs-session-id cookie names no session (unknown, swept after expiry, or the KBS restarted): POST /kbs/v0/auth again")
	}
}
