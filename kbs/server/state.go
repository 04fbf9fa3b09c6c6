package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/cofferhq/coffer/kbs/policy"
	"github.com/cofferhq/coffer/kbs/refvalues"
	"github.com/cofferhq/coffer/kbs/store"
)

// defaultActor is the audit actor of the defaults stored on first start.
const defaultActor = "cc-kbs (shipped default)"

// attestationPolicy is a compiled attestation policy and its stored version.
type attestationPolicy struct {
	p   *policy.Attestation
	doc store.Document
}

// resourcePolicy is a compiled resource policy and its stored version.
type resourcePolicy struct {
	p   *policy.Resource
	doc store.Document
}

// policyID names a policy version in tokens and problems:
// "<kind>@v<version>:sha256:<hex>".
func policyID(d store.Document) string {
	return fmt.Sprintf("%s@v%d:sha256:%s", d.Kind, d.Version, d.SHA256)
}

// loadState loads (or seeds) both policies and the reference values.
func (s *Server) loadState(ctx context.Context) error {
	attDoc, err := s.currentOrDefault(store.KindAttestationPolicy, s.cfg.DefaultAttestationPolicy)
	if err != nil {
		return err
	}
	ap, err := policy.CompileAttestation(ctx, string(attDoc.Content))
	if err != nil {
		return fmt.Errorf("stored attestation policy v%d: %w", attDoc.Version, err)
	}
	resDoc, err := s.currentOrDefault(store.KindResourcePolicy, s.cfg.DefaultResourcePolicy)
	if err != nil {
		return err
	}
	rp, err := policy.CompileResource(ctx, string(resDoc.Content))
	if err != nil {
		return fmt.Errorf("stored resource policy v%d: %w", resDoc.Version, err)
	}
	refDoc, err := s.cfg.Store.Document(store.KindReferenceValues)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	rv, err := refvalues.Parse(refDoc.Content)
	if err != nil {
		return fmt.Errorf("stored reference values v%d: %w", refDoc.Version, err)
	}
	s.mu.Lock()
	s.att = &attestationPolicy{p: ap, doc: attDoc}
	s.res = &resourcePolicy{p: rp, doc: resDoc}
	s.refValues, s.refDoc = rv, refDoc
	s.mu.Unlock()
	return nil
}

func (s *Server) currentOrDefault(kind store.Kind, def string) (store.Document, error) {
	d, err := s.cfg.Store.Document(kind)
	if err == nil {
		return d, nil
	}
	if !errors.Is(err, errdefs.ErrNotFound) {
		return store.Document{}, err
	}
	if def == "" {
		return store.Document{}, fmt.Errorf("no %s stored and no default configured", kind)
	}
	return s.cfg.Store.PutDocument(kind, []byte(def), defaultActor)
}

// snapshot returns the current policies and reference values.
func (s *Server) snapshot() (*attestationPolicy, *resourcePolicy, refvalues.Values) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.att, s.res, s.refValues
}
