package shim

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	ccevents "github.com/cofferhq/coffer/api/events/v1"
	"github.com/cofferhq/coffer/initdata"
)

// podInitData is the init-data a pod's VM is launched with: the raw
// document and its parsed form (nil when the pod has none).
type podInitData struct {
	raw []byte
	doc *initdata.Document
}

// loadInitData returns the pod's init-data: the io.coffer.cc.init-data
// annotation, else Kata's io.katacontainers.config.hypervisor.cc_init_data,
// else the shim config's attestation.init_data file, else none. The
// document is parsed here so that a malformed one fails the create before
// a VM boots.
func loadInitData(cfg *Config, spec *specs.Spec) (*podInitData, error) {
	var raw []byte
	src := ""
	for _, key := range []string{initdata.AnnotationCoffer, initdata.AnnotationKata} {
		v, ok := spec.Annotations[key]
		if !ok {
			continue
		}
		b, err := initdata.DecodeAnnotation(v)
		if err != nil {
			return nil, fmt.Errorf("annotation %s: %w: %w", key, err, errdefs.ErrInvalidArgument)
		}
		raw, src = b, "annotation "+key
		break
	}
	if raw == nil && cfg.Attestation.InitData != "" {
		b, err := os.ReadFile(cfg.Attestation.InitData)
		if err != nil {
			return nil, fmt.Errorf("attestation.init_data: %w", err)
		}
		raw, src = b, "attestation.init_data "+cfg.Attestation.InitData
	}
	if raw == nil {
		return &podInitData{}, nil
	}
	doc, err := initdata.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("init-data from %s: %w: %w", src, err, errdefs.ErrInvalidArgument)
	}
	return &podInitData{raw: raw, doc: doc}, nil
}

// digest is the init-data digest, nil without init-data.
func (d *podInitData) digest() []byte {
	if d == nil || d.doc == nil {
		return nil
	}
	return d.doc.Digest()
}

// initGuest hands the init-data to the agent (InitSandbox). The agent
// checks it against the digest the TEE bound at launch.
func (sb *sandbox) initGuest(ctx context.Context, cfg *Config, id *podInitData) error {
	_, err := sb.agent.InitSandbox(ctx, &agent.InitSandboxRequest{
		InitData:              id.raw,
		RequireAttestation:    *cfg.Attestation.Required,
		AttestationDeadlineNs: time.Duration(cfg.Attestation.Deadline).Nanoseconds(),
		Endpoints:             sb.registry.GetEndpoints(),
	})
	if err != nil {
		return fmt.Errorf("hand init-data to the guest: %w", errgrpc.ToNative(err))
	}
	return nil
}

// attestationTarget remembers which container's create the guest is
// attesting for, so /cc/attestation events name it.
type attestationTarget struct {
	mu sync.Mutex
	id string
}

func (t *attestationTarget) set(id string) {
	t.mu.Lock()
	t.id = id
	t.mu.Unlock()
}

func (t *attestationTarget) get() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.id
}

// watchAttestation publishes the guest's attestation steps as
// /cc/attestation events until the sandbox stops.
func (s *service) watchAttestation(sb *sandbox) {
	for {
		ev, err := sb.agent.GetAttestationEvent(sb.ctx, &agent.GetAttestationEventRequest{})
		if err != nil {
			if sb.ctx.Err() == nil {
				log.G(sb.ctx).WithError(err).Debug("attestation event stream ended")
			}
			return
		}
		log.G(sb.ctx).WithFields(log.Fields{
			"phase": ev.GetPhase(), "tee": ev.GetTee(), "kbs": ev.GetKbsUrl(), "reason": ev.GetReason(), "attempt": ev.GetAttempt(),
		}).Info("attestation")
		s.send(ccevents.TopicAttestation, &ccevents.Attestation{
			ContainerId: sb.attesting.get(),
			Phase:       ev.GetPhase(),
			Tee:         ev.GetTee(),
			Measurement: ev.GetMeasurement(),
			KbsUrl:      ev.GetKbsUrl(),
			Reason:      ev.GetReason(),
			Resource:    ev.GetResource(),
			Attempt:     ev.GetAttempt(),
			DurationNs:  ev.GetDurationNs(),
		})
	}
}
