// Package aa is Coffer's in-guest attestation agent: it attests the guest
// to a KBS (Trustee KBS protocol v0.4.0, through kbs/client) with evidence
// from a guest/attester, sending the pod's init-data, and then fetches KBS
// resources for the confidential data hub (it implements
// guest/cdh.ResourceGetter). It reports every step as an Event and
// classifies failures into typed errors (UnreachableError,
// EvidenceRejectedError, DeniedError, ResourceDeniedError,
// ResourceNotFoundError) that match errdefs classes.
//
// Only transport failures and HTTP 5xx are retried, with exponential
// backoff, bounded by Retry.Attempts and Config.Deadline; a KBS verdict
// (evidence rejected, policy denied) is final at once.
package aa

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/containerd/log"

	"github.com/cofferhq/coffer/guest/attester"
	"github.com/cofferhq/coffer/guest/cdh"
	"github.com/cofferhq/coffer/kbs/client"
	"github.com/cofferhq/coffer/kbs/problem"
	"github.com/cofferhq/coffer/kbs/protocol"
)

// Defaults for zero Config fields.
const (
	// DefaultDeadline bounds Attest (all attempts and backoff).
	DefaultDeadline = 30 * time.Second
	// DefaultAttempts is the attempt budget of one Attest or Resource.
	DefaultAttempts = 8
	// DefaultInitialBackoff is the pause after the first failed attempt;
	// it doubles per attempt up to DefaultMaxBackoff.
	DefaultInitialBackoff = 250 * time.Millisecond
	// DefaultMaxBackoff caps the pause between attempts.
	DefaultMaxBackoff = 4 * time.Second
)

// Retry is the policy for an unreachable KBS (transport errors, HTTP 5xx).
type Retry struct {
	// Attempts is the most attempts per Attest or Resource call; 0 means
	// DefaultAttempts.
	Attempts int
	// InitialBackoff is the first pause; 0 means DefaultInitialBackoff.
	InitialBackoff time.Duration
	// MaxBackoff caps the doubling pause; 0 means DefaultMaxBackoff.
	MaxBackoff time.Duration
}

// Config configures an Agent.
type Config struct {
	// KBSURL is the KBS base URL, "https://host:port" (http:// only for
	// tests). Required.
	KBSURL string
	// KBSCertPEM pins the KBS's TLS certificate: the server's leaf must be
	// this certificate or be issued by it; host names are not checked, and
	// a mismatch is a final *PinError. "" uses the system roots.
	KBSCertPEM string
	// Attester produces the evidence. Required. A guest/attester.Attester
	// also gives the Measurement of events; any kbs/client.Attester works.
	Attester client.Attester
	// InitData is the raw init-data TOML document, sent as the attest
	// request's init-data (format "toml"); the KBS checks its digest
	// against the evidence's HOST_DATA / MRCONFIGID. Nil sends none.
	InitData []byte
	// Deadline bounds one Attest call; 0 means DefaultDeadline.
	Deadline time.Duration
	// Retry is the retry policy for an unreachable KBS.
	Retry Retry
	// OnEvent receives every Event, synchronously; nil drops them.
	OnEvent func(Event)
	// HTTPClient overrides the HTTP client (tests); KBSCertPEM and
	// DialContext are then ignored.
	HTTPClient *http.Client
	// DialContext, if set, opens the TCP connections to the KBS (the
	// guest uses it to reach a host address through its forwarded guest
	// address, as the image pull does); nil dials directly.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Agent attests to one KBS and fetches its resources. Safe for concurrent
// use: calls are serialised.
type Agent struct {
	cfg         Config
	mu          sync.Mutex
	kc          *client.Client
	attested    bool
	measurement string
}

var _ cdh.ResourceGetter = (*Agent)(nil)

// New checks cfg and returns an Agent. It fails if KBSURL is not an
// http(s) URL, Attester is nil, or KBSCertPEM does not parse.
func New(cfg Config) (*Agent, error) {
	u, err := url.Parse(cfg.KBSURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("configure attestation agent: KBS URL %q: want https://host:port (aa.toml [token_configs.kbs] url)", cfg.KBSURL)
	}
	if cfg.Attester == nil {
		return nil, errors.New("configure attestation agent: no Attester: detect one with guest/attester.Detect")
	}
	if cfg.Deadline <= 0 {
		cfg.Deadline = DefaultDeadline
	}
	if cfg.Retry.Attempts <= 0 {
		cfg.Retry.Attempts = DefaultAttempts
	}
	if cfg.Retry.InitialBackoff <= 0 {
		cfg.Retry.InitialBackoff = DefaultInitialBackoff
	}
	if cfg.Retry.MaxBackoff <= 0 {
		cfg.Retry.MaxBackoff = DefaultMaxBackoff
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		if cfg.KBSCertPEM != "" {
			if hc, err = pinnedHTTPClient(cfg.KBSCertPEM, time.Now); err != nil {
				return nil, fmt.Errorf("configure attestation agent: %w", err)
			}
		}
		if t, ok := hc.Transport.(*http.Transport); ok && cfg.DialContext != nil {
			t.DialContext = cfg.DialContext
		}
	}
	var opts client.Options
	opts.HTTPClient = hc
	if cfg.InitData != nil {
		opts.InitData = &protocol.InitData{Format: "toml", Body: string(cfg.InitData)}
	}
	kc, err := client.New(cfg.KBSURL, cfg.Attester, opts)
	if err != nil {
		return nil, fmt.Errorf("configure attestation agent: %w", err)
	}
	return &Agent{cfg: cfg, kc: kc}, nil
}

// Token returns the KBS attestation token (an EAR JWT), "" before a
// successful Attest.
func (a *Agent) Token() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.kc.Token()
}

func (a *Agent) emit(e Event) {
	e.TEE = string(a.cfg.Attester.TEE())
	e.KBSURL = a.cfg.KBSURL
	if e.Measurement == "" {
		e.Measurement = a.measurement
	}
	if a.cfg.OnEvent != nil {
		a.cfg.OnEvent(e)
	}
}

// Attest runs the KBS handshake (auth, evidence, attest) until the KBS
// answers, retrying an unreachable KBS per Config.Retry within
// Config.Deadline. It emits evidence, verifying, then allowed or denied
// events, and one failed event per failed attempt. Errors:
// *UnreachableError, *EvidenceRejectedError, *DeniedError, or a wrapped
// error for evidence the TEE could not produce or another KBS refusal.
func (a *Agent) Attest(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.attestLocked(ctx)
}

func (a *Agent) attestLocked(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Deadline)
	defer cancel()
	a.attested = false
	return a.retry(ctx, "", func(attempt int, start time.Time) (bool, error) {
		ch, err := a.kc.Auth(ctx)
		if err != nil {
			return retryable(err), a.classify(err, "")
		}
		att, err := a.kc.BuildAttestation(ctx, ch)
		if err != nil {
			return false, fmt.Errorf("attest to KBS at %s: %w", a.cfg.KBSURL, err)
		}
		a.measurement = measurementOf(a.cfg.Attester, att)
		a.emit(Event{Phase: PhaseEvidence, Attempt: attempt, Duration: time.Since(start)})
		a.emit(Event{Phase: PhaseVerifying, Attempt: attempt, Duration: time.Since(start)})
		if _, err := a.kc.PostAttestation(ctx, att); err != nil {
			return retryable(err), a.classify(err, "")
		}
		a.attested = true
		a.emit(Event{Phase: PhaseAllowed, Attempt: attempt, Duration: time.Since(start)})
		log.G(ctx).WithField("kbs", a.cfg.KBSURL).WithField("attempt", attempt).Info("attested to KBS")
		return false, nil
	})
}

// measurementOf returns the hex measurement of the evidence in att, or ""
// when the attester's format is unknown to guest/attester.
func measurementOf(at client.Attester, att *protocol.Attestation) string {
	raw, err := protocol.DecodeEvidence(att.TEEEvidence)
	if err != nil {
		return ""
	}
	m, err := attester.Measurement(at.TEE(), raw)
	if err != nil {
		return ""
	}
	return hex.EncodeToString(m)
}

// retry runs op until it succeeds, fails finally, the attempt budget is
// spent or ctx ends. op reports whether its error is retryable.
func (a *Agent) retry(ctx context.Context, resource string, op func(attempt int, start time.Time) (bool, error)) error {
	first := time.Now()
	backoff := a.cfg.Retry.InitialBackoff
	var last error
	for attempt := 1; ; attempt++ {
		start := time.Now()
		again, err := op(attempt, start)
		if err == nil {
			return nil
		}
		last = err
		if !again {
			phase := PhaseFailed
			var er *EvidenceRejectedError
			var de *DeniedError
			var rd *ResourceDeniedError
			if errors.As(err, &er) || errors.As(err, &de) || errors.As(err, &rd) {
				phase = PhaseDenied
			}
			a.emit(Event{Phase: phase, Reason: err.Error(), Resource: resource, Attempt: attempt, Duration: time.Since(start)})
			return err
		}
		a.emit(Event{Phase: PhaseFailed, Reason: fmt.Sprintf("KBS unreachable at %s (attempt %d of %d): %v", a.cfg.KBSURL, attempt, a.cfg.Retry.Attempts, err),
			Resource: resource, Attempt: attempt, Duration: time.Since(start)})
		if attempt >= a.cfg.Retry.Attempts {
			return &UnreachableError{URL: a.cfg.KBSURL, Attempts: attempt, Elapsed: time.Since(first), Err: last}
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return &UnreachableError{URL: a.cfg.KBSURL, Attempts: attempt, Elapsed: time.Since(first),
				Err: fmt.Errorf("%w (stopped: %v)", last, context.Cause(ctx))}
		case <-t.C:
		}
		backoff = min(2*backoff, a.cfg.Retry.MaxBackoff)
	}
}

// retryable reports whether err means the KBS was not reached or failed
// on its side: a transport error or HTTP 5xx.
func retryable(err error) bool {
	var re *client.ResponseError
	if errors.As(err, &re) {
		return re.Status >= 500
	}
	var pe *PinError
	return !errors.As(err, &pe) && !errors.Is(err, context.Canceled)
}

// classify turns a KBS client error into the package's typed errors;
// resource is the resource URI for resource requests.
func (a *Agent) classify(err error, resource string) error {
	var re *client.ResponseError
	if !errors.As(err, &re) || re.Problem == nil {
		return err
	}
	p := re.Problem
	switch client.ProblemType(err) {
	case problem.EvidenceInvalid.Name:
		return &EvidenceRejectedError{Check: p.Check, Detail: p.Detail, Err: err}
	case problem.PolicyDenied.Name:
		if resource != "" {
			return &ResourceDeniedError{URI: resource, Rule: ruleOf(p), Detail: p.Detail, Err: err}
		}
		return &DeniedError{Rule: ruleOf(p), Policy: p.Policy, Detail: p.Detail, Reasons: p.Reasons, Err: err}
	case problem.NotFound.Name:
		if resource != "" {
			return &ResourceNotFoundError{URI: resource, Err: err}
		}
	}
	return fmt.Errorf("KBS at %s refused the request: %w", a.cfg.KBSURL, err)
}

func ruleOf(p *problem.Problem) string {
	if p.Rule != "" {
		if p.Policy != "" {
			return p.Policy + " policy rule " + p.Rule
		}
		return "rule " + p.Rule
	}
	if p.Policy != "" {
		return p.Policy + " policy"
	}
	return "KBS policy"
}

// Resource returns the plaintext of KBS resource uri ("kbs:///repo/type/tag";
// a host part is ignored). It attests first if needed, and re-attests once
// if the KBS no longer knows the session. It emits keys-released on
// success. Errors: *ResourceNotFoundError, *ResourceDeniedError,
// *UnreachableError, an attestation error, or errdefs.ErrInvalidArgument
// for a malformed uri.
func (a *Agent) Resource(ctx context.Context, uri string) ([]byte, error) {
	path, err := cdh.ParseResourceURI(uri)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.attested {
		if err := a.attestLocked(ctx); err != nil {
			return nil, err
		}
	}
	var out []byte
	reattested := false
	err = a.retry(ctx, uri, func(attempt int, start time.Time) (bool, error) {
		jwe, err := a.kc.FetchResource(ctx, path.String(), "")
		if pt := client.ProblemType(err); (pt == problem.Unauthenticated.Name || pt == problem.SessionExpired.Name) && !reattested {
			// The KBS restarted or the session expired: attest again once.
			reattested = true
			if aerr := a.attestLocked(ctx); aerr != nil {
				return false, aerr
			}
			jwe, err = a.kc.FetchResource(ctx, path.String(), "")
		}
		if err != nil {
			return retryable(err), a.classify(err, uri)
		}
		if out, err = a.kc.Decrypt(jwe); err != nil {
			return false, fmt.Errorf("decrypt resource %s from KBS at %s: %w", uri, a.cfg.KBSURL, err)
		}
		a.emit(Event{Phase: PhaseKeysReleased, Resource: uri, Attempt: attempt, Duration: time.Since(start)})
		return false, nil
	})
	return out, err
}
