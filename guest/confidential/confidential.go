// Package confidential is the trust machinery of a Coffer guest, behind
// cc-agent's InitSandbox, PullImage, CreateContainer and ExecProcess: it
// checks the pod's init-data against the digest the TEE bound at launch,
// attests to the KBS the init-data names (guest/aa) before the first image
// pull, applies the image security policy (guest/imagepolicy), hands the
// pull a layer-key source (guest/cdh), unseals sealed secrets in
// environment variables (guest/cdh/sealed), and serves KBS resources to
// workloads (guest/cdh/apiserver). It implements guest/agent.Confidential.
//
// Order of start-up in a confidential guest: boot → agent → InitSandbox
// (init-data checked) → first PullImage: attestation → keys and policy →
// pull, verify, decrypt → CreateContainer (secrets unsealed) → start.
package confidential

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sirupsen/logrus"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/cofferhq/coffer/guest/aa"
	"github.com/cofferhq/coffer/guest/attester"
	"github.com/cofferhq/coffer/guest/cdh"
	"github.com/cofferhq/coffer/guest/cdh/sealed"
	"github.com/cofferhq/coffer/guest/image"
	"github.com/cofferhq/coffer/guest/imagepolicy"
	"github.com/cofferhq/coffer/initdata"
)

// eventBuffer is how many attestation events wait for the host before the
// oldest are dropped (the host reads them with GetAttestationEvent).
const eventBuffer = 256

// Options configure a Hub. The zero value is the real guest.
type Options struct {
	// Detect finds the TEE; nil means attester.Detect with the real
	// Linux paths.
	Detect func() (attester.Attester, error)
	// Log is the logger; nil discards.
	Log *logrus.Entry
	// ServeResources starts the workload resource endpoint once a KBS is
	// configured (cdh/apiserver on 127.0.0.1:8006 in cc-agent); nil serves
	// nothing.
	ServeResources func(ctx context.Context, rg cdh.ResourceGetter) error
	// NewFetcher builds the signature fetcher for a pull's registry
	// config; nil means imagepolicy.RegistryFetcher over guest/image's
	// registry transport.
	NewFetcher func(reg image.RegistryConfig, ref string) (imagepolicy.Fetcher, error)
	// Retry overrides the attestation agent's retry policy (tests).
	Retry aa.Retry
	// Dial opens the attestation agent's connections to the KBS, after
	// InitSandbox's dial rewrites: cc-agent's forward.Dialer, which
	// carries network.forwards over the agent transport. nil dials TCP
	// directly with a 10 s timeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Hub is the guest's confidential part. Create it with New; it is safe for
// concurrent use.
type Hub struct {
	o      Options
	log    *logrus.Entry
	events chan *agent.AttestationEvent

	mu        sync.Mutex
	inited    bool
	require   bool
	doc       *initdata.Document
	att       attester.Attester
	agent     *aa.Agent
	keys      *cdh.KeyProvider
	attested  bool
	policy    *imagepolicy.Policy
	policyURI string
}

// New returns a Hub that waits for Init.
func New(o Options) *Hub {
	if o.Detect == nil {
		o.Detect = func() (attester.Attester, error) { return attester.Detect(attester.Options{}) }
	}
	l := o.Log
	if l == nil {
		lg := logrus.New()
		lg.Out = discard{}
		l = logrus.NewEntry(lg)
	}
	return &Hub{o: o, log: l, events: make(chan *agent.AttestationEvent, eventBuffer)}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Init takes the pod's init-data, once. It detects the TEE and compares the
// init-data digest, fitted to the TEE's field (SNP/sim HOST_DATA 32 bytes,
// TDX MRCONFIGID 48 bytes), with the value the TEE reports; a mismatch,
// including init-data removed or added after launch, is refused with
// errdefs.ErrPermissionDenied. With require_attestation it fails
// (errdefs.ErrFailedPrecondition) when there is no TEE or the init-data
// names no KBS. A second call fails with ErrFailedPrecondition.
func (h *Hub) Init(ctx context.Context, req *agent.InitSandboxRequest) (*agent.InitSandboxResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.inited {
		return nil, fmt.Errorf("init sandbox: init-data was already set for this guest; it is set once, at boot: %w", errdefs.ErrFailedPrecondition)
	}
	var doc *initdata.Document
	if raw := req.GetInitData(); len(raw) > 0 {
		d, err := initdata.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("init sandbox: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		doc = d
	}
	att, derr := h.o.Detect()
	resp := &agent.InitSandboxResponse{}
	if doc != nil {
		resp.InitDataDigest = doc.Digest()
	}
	switch {
	case att != nil:
		resp.Tee = string(att.TEE())
		if err := checkBinding(ctx, att, doc); err != nil {
			return nil, err
		}
	case req.GetRequireAttestation():
		return nil, fmt.Errorf("init sandbox: attestation is required but this guest has no TEE to attest with: %v: %w", derr, errdefs.ErrFailedPrecondition)
	case doc != nil:
		h.log.WithError(derr).Warn("no TEE: the init-data cannot be checked against a launch measurement")
	}
	var kbs *initdata.KBSConfig
	if doc != nil {
		k, err := doc.KBS()
		if err != nil {
			return nil, fmt.Errorf("init sandbox: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		kbs = k
	}
	if kbs == nil && req.GetRequireAttestation() {
		return nil, fmt.Errorf("init sandbox: attestation is required but the init-data names no KBS: set aa.toml [token_configs.kbs] url (and cert) in the pod's init-data: %w", errdefs.ErrFailedPrecondition)
	}
	if kbs != nil && att != nil {
		endpoints := req.GetEndpoints()
		dial := h.o.Dial
		if dial == nil {
			dialer := &net.Dialer{Timeout: 10 * time.Second}
			dial = dialer.DialContext
		}
		a, err := aa.New(aa.Config{
			KBSURL:     kbs.URL,
			KBSCertPEM: kbs.CertPEM,
			Attester:   att,
			InitData:   doc.Raw,
			Deadline:   time.Duration(req.GetAttestationDeadlineNs()),
			Retry:      retryPolicy(h.o.Retry),
			OnEvent:    h.push,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return dial(ctx, network, image.Endpoint(endpoints, addr))
			},
		})
		if err != nil {
			return nil, fmt.Errorf("init sandbox: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		h.agent = a
		h.keys = cdh.NewKeyProvider(a)
		h.policyURI = doc.ImageSecurityPolicyURI()
		if h.o.ServeResources != nil {
			go func() {
				if err := h.o.ServeResources(context.WithoutCancel(ctx), a); err != nil {
					h.log.WithError(err).Error("workload resource endpoint stopped")
				}
			}()
		}
	}
	h.doc, h.att, h.require, h.inited = doc, att, req.GetRequireAttestation(), true
	h.log.WithField("tee", resp.Tee).WithField("kbs", kbs != nil).Info("init-data accepted")
	return resp, nil
}

// checkBinding compares the init-data digest with the TEE's bound value.
func checkBinding(ctx context.Context, att attester.Attester, doc *initdata.Document) error {
	bound, err := att.InitDataBinding(ctx)
	if err != nil {
		return fmt.Errorf("init sandbox: read the init-data digest the %s TEE bound at launch: %w", att.TEE(), err)
	}
	want := make([]byte, len(bound))
	if doc != nil {
		want = initdata.Fit(doc.Digest(), len(bound))
	}
	if !bytes.Equal(bound, want) {
		what := "the init-data the host passed"
		if doc == nil {
			what = "the absence of init-data"
		}
		return fmt.Errorf("init sandbox: %s does not match the launch-bound digest (%s %s, want %s): the init-data was changed after launch, so it is refused: %w",
			what, bindingField(att), hex.EncodeToString(bound), hex.EncodeToString(want), errdefs.ErrPermissionDenied)
	}
	return nil
}

func bindingField(att attester.Attester) string {
	if att.TEE() == "tdx" {
		return "MRCONFIGID"
	}
	return "HOST_DATA"
}

// PreparePull attests before the guest's first pull when a KBS is
// configured, loads the image security policy from the KBS and checks the
// image's signatures against it, and gives the pull the CDH key provider
// for encrypted layers. Without a KBS it refuses when attestation is
// required, and otherwise leaves req as it is.
func (h *Hub) PreparePull(ctx context.Context, req *image.Request) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.agent == nil {
		if h.require {
			return fmt.Errorf("this confidential guest pulls images only after attestation, and it has no KBS to attest to (no init-data or no KBS in it): %w", errdefs.ErrFailedPrecondition)
		}
		return nil
	}
	if !h.attested {
		if err := h.agent.Attest(ctx); err != nil {
			return fmt.Errorf("attestation before pulling %s: %w", req.Reference, err)
		}
		h.attested = true
	}
	if h.policyURI != "" && h.policy == nil {
		b, err := h.agent.Resource(ctx, h.policyURI)
		if err != nil {
			return fmt.Errorf("fetch the image security policy %s: %w", h.policyURI, err)
		}
		p, err := imagepolicy.Parse(b)
		if err != nil {
			return fmt.Errorf("image security policy %s: %w", h.policyURI, err)
		}
		h.policy = p
	}
	if h.policy != nil {
		if req.Digest == "" {
			return fmt.Errorf("check %s against the image security policy: the host sent no digest to pin: pull it with the cc snapshotter: %w", req.Reference, errdefs.ErrInvalidArgument)
		}
		newFetcher := h.o.NewFetcher
		if newFetcher == nil {
			newFetcher = registryFetcher
		}
		f, err := newFetcher(req.Registry, req.Reference)
		if err != nil {
			return err
		}
		if err := h.policy.Verify(ctx, req.Reference, req.Digest, f); err != nil {
			return fmt.Errorf("image security policy %s: %w", h.policyURI, err)
		}
	}
	req.Decrypt = h.keys
	return nil
}

// UnsealEnv replaces "NAME=sealed.…" entries with their KBS values. A
// sealed secret without a KBS is an error naming the variable.
func (h *Hub) UnsealEnv(ctx context.Context, env []string) ([]string, error) {
	h.mu.Lock()
	a := h.agent
	h.mu.Unlock()
	if a == nil {
		for _, kv := range env {
			if name, v, ok := cutEnv(kv); ok && sealed.IsSealed(v) {
				return nil, fmt.Errorf("environment variable %s holds a sealed secret, but this guest has no attested KBS session to unseal it with (the init-data names no KBS, or the guest has no TEE to attest with): %w", name, errdefs.ErrFailedPrecondition)
			}
		}
		return env, nil
	}
	return sealed.UnsealEnv(ctx, env, a)
}

func cutEnv(kv string) (name, value string, ok bool) {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return "", "", false
}

// NextEvent blocks until the next attestation event or ctx ends.
func (h *Hub) NextEvent(ctx context.Context) (*agent.AttestationEvent, error) {
	select {
	case ev := <-h.events:
		return ev, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// push queues an attestation agent event for the host, dropping the
// oldest when nobody reads them.
func (h *Hub) push(e aa.Event) {
	ev := &agent.AttestationEvent{
		Phase: string(e.Phase), Tee: e.TEE, Measurement: e.Measurement, KbsUrl: e.KBSURL,
		Reason: e.Reason, Resource: e.Resource, Attempt: int32(e.Attempt), DurationNs: e.Duration.Nanoseconds(),
	}
	h.log.WithFields(logrus.Fields{"phase": ev.Phase, "reason": ev.Reason, "attempt": ev.Attempt}).Info("attestation")
	for {
		select {
		case h.events <- ev:
			return
		default:
		}
		select {
		case <-h.events:
		default:
		}
	}
}

// registryFetcher fetches signatures the way guest/image pulls ref.
func registryFetcher(reg image.RegistryConfig, ref string) (imagepolicy.Fetcher, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("check %s against the image security policy: %w: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	ro, no, err := image.RemoteOptions(reg, r.Context().RegistryStr())
	if err != nil {
		return nil, fmt.Errorf("check %s against the image security policy: %w", ref, err)
	}
	return imagepolicy.RegistryFetcher{NameOptions: no, RemoteOptions: ro}, nil
}

// retryPolicy lets attestation.deadline, not an attempt count, bound the
// retries of an unreachable KBS (issue: "retries until a configurable
// deadline"), unless the caller set one.
func retryPolicy(r aa.Retry) aa.Retry {
	if r.Attempts == 0 {
		r.Attempts = math.MaxInt32
	}
	return r
}
