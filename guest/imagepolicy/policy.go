// Package imagepolicy is the guest's image security policy: which images
// may run, and whose cosign signature they must carry.
//
// The policy document is containers-policy.json (containers/image,
// docs/containers-policy.json.5.md), the format CoCo's image-rs reads too:
//
//	{
//	  "default": [{"type": "reject"}],
//	  "transports": {
//	    "docker": {
//	      "registry.example:5000/app": [{
//	        "type": "sigstoreSigned",
//	        "keyData": "<base64 of a PEM public key>",
//	        "signedIdentity": {"type": "matchRepoDigestOrExact"}
//	      }],
//	      "registry.example:5000/tools": [{"type": "insecureAcceptAnything"}]
//	    }
//	  }
//	}
//
// The requirements for an image come from the most specific scope of
// transports.docker that matches its reference, in containers/image's
// order: the exact reference ("host/repo:tag" or "host/repo@sha256:…"), the
// repository, each parent namespace down to the host, the host's wildcard
// domains ("*.example.com", "*.com"), the transport-wide scope "", and
// finally "default". Every requirement of the chosen list must be met.
//
// Signatures are cosign key-based signatures (sigstore cosign, "Signature
// specification", docs/SIGNATURE_SPEC.md): an OCI manifest at tag
// "sha256-<hex>.sig" of the image's repository whose layers are
// simple-signing payloads (containers/image, containers-signature.5.md,
// critical.type "cosign container image signature"), each with its
// base64 signature in the layer annotation "dev.cosignproject.cosign/signature".
// Transparency-log (Rekor) bundles and keyless (Fulcio) certificates are
// not consulted: trust rests only on the keys in the policy, which the
// guest fetches from the KBS after attestation.
package imagepolicy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
)

// TransportDocker is the transports key whose scopes apply to registry
// images; the guest pulls only from registries, so other transports
// ("atomic", "docker-daemon", …) are ignored.
const TransportDocker = "docker"

// maxPolicySize bounds the policy document.
const maxPolicySize = 1 << 20 // bytes

// Policy is a parsed containers-policy.json. Build it with Parse.
type Policy struct {
	// Default applies when no scope of transports.docker matches.
	Default []Requirement
	// Docker maps transports.docker scopes ("host[:port][/ns…][/repo]",
	// "host/repo:tag", "host/repo@sha256:<hex>", "*.domain" or "") to
	// their requirements.
	Docker map[string][]Requirement
}

// Parse parses and checks a containers-policy.json document (at most 1
// MiB). It refuses, naming the offending scope and field: unknown
// fields, an empty or missing "default", unknown requirement types, the
// GPG "signedBy" type, keyless (Fulcio), Rekor and PKI options, keyPath
// and keyPaths (the guest has no trusted files: embed the key as keyData),
// keys that do not parse, and the signedIdentity type remapIdentity. All
// errors wrap errdefs.ErrInvalidArgument (or ErrNotImplemented for
// unsupported features).
func Parse(doc []byte) (*Policy, error) {
	if len(doc) > maxPolicySize {
		return nil, fmt.Errorf("parse image policy: document is %d bytes, more than the %d allowed: %w", len(doc), maxPolicySize, errdefs.ErrInvalidArgument)
	}
	var raw struct {
		Default    []json.RawMessage                       `json:"default"`
		Transports map[string]map[string][]json.RawMessage `json:"transports"`
	}
	if err := strictUnmarshal(doc, &raw); err != nil {
		return nil, fmt.Errorf("parse image policy: want containers-policy.json ({\"default\": [...], \"transports\": {\"docker\": {...}}}): %w", invalid(err))
	}
	if len(raw.Default) == 0 {
		return nil, fmt.Errorf("parse image policy: \"default\" is missing or empty: give at least one requirement, e.g. [{\"type\": \"reject\"}]: %w", errdefs.ErrInvalidArgument)
	}
	p := &Policy{Docker: map[string][]Requirement{}}
	var err error
	if p.Default, err = parseRequirements(raw.Default); err != nil {
		return nil, fmt.Errorf("parse image policy: default: %w", err)
	}
	for scope, reqs := range raw.Transports[TransportDocker] {
		if err := checkScope(scope); err != nil {
			return nil, fmt.Errorf("parse image policy: transports.docker[%q]: %w", scope, err)
		}
		if len(reqs) == 0 {
			return nil, fmt.Errorf("parse image policy: transports.docker[%q] is an empty list: give at least one requirement: %w", scope, errdefs.ErrInvalidArgument)
		}
		if p.Docker[scope], err = parseRequirements(reqs); err != nil {
			return nil, fmt.Errorf("parse image policy: transports.docker[%q]: %w", scope, err)
		}
	}
	return p, nil
}

// checkScope refuses transports.docker keys that cannot match any
// reference the way containers/image spells scopes.
func checkScope(scope string) error {
	switch {
	case scope == "":
		return nil
	case strings.Contains(scope, "://"):
		return fmt.Errorf("scope has a URL scheme: write it as \"host[:port]/repo\" without \"docker://\": %w", errdefs.ErrInvalidArgument)
	case strings.ContainsAny(scope, " \t\r\n"):
		return fmt.Errorf("scope contains white space: %w", errdefs.ErrInvalidArgument)
	case strings.HasPrefix(scope, "*."):
		if strings.ContainsAny(scope[2:], "*/:@") || scope[2:] == "" {
			return fmt.Errorf("wildcard scope must be \"*.domain\" with no port or path: %w", errdefs.ErrInvalidArgument)
		}
		return nil
	case strings.Contains(scope, "*"):
		return fmt.Errorf("\"*\" is allowed only as a leading \"*.\" of a domain: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// Scope returns the policy scope that applies to ref (a reference such as
// "registry:5000/app:v1", normalized like docker does: "busybox" is
// "docker.io/library/busybox:latest") and its requirements. scope is
// rendered for messages: `transports.docker["registry:5000/app"]`, or
// "default" when no transports.docker scope matches. It returns an
// errdefs.ErrInvalidArgument-classed error when ref does not parse.
func (p *Policy) Scope(ref string) (scope string, reqs []Requirement, err error) {
	named, err := parseImageRef(ref)
	if err != nil {
		return "", nil, err
	}
	for _, s := range scopesOf(named) {
		if r, ok := p.Docker[s]; ok {
			return fmt.Sprintf("transports.docker[%q]", s), r, nil
		}
	}
	return "default", p.Default, nil
}

// parseImageRef parses ref like docker (short names are on docker.io), adds
// the tag "latest" to a name-only reference, and drops the tag of a
// reference that has both a tag and a digest (the digest names the image).
func parseImageRef(ref string) (reference.Named, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, fmt.Errorf("parse image reference %q: want \"host[:port]/repo[:tag][@sha256:<hex>]\": %w", ref, invalid(err))
	}
	if d, ok := named.(reference.Digested); ok {
		if _, tagged := named.(reference.Tagged); tagged {
			return reference.WithDigest(reference.TrimNamed(named), d.Digest())
		}
		return named, nil
	}
	return reference.TagNameOnly(named), nil
}

// scopesOf lists, most specific first, the transports.docker scopes that
// match named (containers/image: PolicyConfigurationIdentity, then
// PolicyConfigurationNamespaces, then the transport-wide "").
func scopesOf(named reference.Named) []string {
	name := named.Name()
	out := []string{named.String(), name}
	for i := strings.LastIndex(name, "/"); i >= 0; i = strings.LastIndex(name, "/") {
		name = name[:i]
		out = append(out, name)
	}
	if i := strings.Index(name, ":"); i >= 0 {
		name = name[:i] // the host, without port, for the wildcards
	}
	for i := strings.Index(name, "."); i >= 0; i = strings.Index(name, ".") {
		name = name[i+1:]
		out = append(out, "*."+name)
	}
	return append(out, "")
}

// parseRequirements parses a requirement list.
func parseRequirements(raws []json.RawMessage) ([]Requirement, error) {
	out := make([]Requirement, 0, len(raws))
	for i, raw := range raws {
		r, err := parseRequirement(raw)
		if err != nil {
			return nil, fmt.Errorf("requirement %d: %w", i, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// strictUnmarshal decodes doc into v, refusing unknown fields and trailing
// data.
func strictUnmarshal(doc []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the JSON object")
	}
	return nil
}

// fieldsOf returns the field names of a JSON object, sorted.
func fieldsOf(raw json.RawMessage) ([]string, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, nil
}

// invalid classes err as errdefs.ErrInvalidArgument.
func invalid(err error) error { return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument) }
