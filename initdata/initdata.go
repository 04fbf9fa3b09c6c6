// Package initdata reads Confidential Containers init-data: the TOML
// document a pod carries in an annotation (trustee kbs/docs/initdata.md;
// guest-components attestation-agent initdata), whose digest the VMM binds
// into the TEE launch (SNP HOST_DATA, TDX MRCONFIGID, sim host_data) and
// whose files configure the guest's attestation agent (aa.toml), its
// confidential data hub (cdh.toml) and its agent policy (policy.rego).
//
// The digest follows Trustee's rule (attestation-service parse_init_data,
// verifier regularize_data): the document's algorithm over the exact bytes
// of the document, then zero-padded or truncated to the TEE field.
package initdata

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Annotations that carry init-data on a pod or container.
const (
	// AnnotationCoffer holds the standard (padded) base64 of the TOML
	// document, or of its gzip compression.
	AnnotationCoffer = "io.coffer.cc.init-data"
	// AnnotationKata is Kata Containers' annotation: base64(gzip(TOML)).
	AnnotationKata = "io.katacontainers.config.hypervisor.cc_init_data"
)

// Version is the only init-data document version this package accepts.
const Version = "0.1.0"

// Hash algorithm names the document's "algorithm" may hold.
const (
	SHA256 = "sha256"
	SHA384 = "sha384"
	SHA512 = "sha512"
)

// MaxSize bounds a decoded init-data document, bytes (256 KiB, as the
// KBS bounds the init-data body it accepts).
const MaxSize = 256 << 10

// Well-known keys of the document's [data] table.
const (
	FileAA     = "aa.toml"
	FileCDH    = "cdh.toml"
	FilePolicy = "policy.rego"
)

// ErrInvalid is wrapped by every error of this package.
var ErrInvalid = errors.New("invalid init-data")

// gzipMagic starts every gzip stream (RFC 1952 §2.3.1).
var gzipMagic = []byte{0x1f, 0x8b}

// DecodeAnnotation decodes an init-data annotation value: standard padded
// base64 (RFC 4648 §4; surrounding whitespace is ignored) of the TOML
// document, gunzipped when the decoded bytes start with the gzip magic.
// It fails, wrapping ErrInvalid, on bad base64, a corrupt gzip stream or a
// document larger than MaxSize bytes.
func DecodeAnnotation(v string) ([]byte, error) {
	v = strings.TrimSpace(v)
	if len(v) > base64.StdEncoding.EncodedLen(MaxSize) {
		return nil, fmt.Errorf("decode init-data annotation: value is %d bytes of base64: want at most %d (a %d-byte document): %w",
			len(v), base64.StdEncoding.EncodedLen(MaxSize), MaxSize, ErrInvalid)
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("decode init-data annotation: want standard padded base64 of the TOML document (or of its gzip): %v: %w", err, ErrInvalid)
	}
	if !bytes.HasPrefix(b, gzipMagic) {
		return b, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("decode init-data annotation: gunzip: %v: %w", err, ErrInvalid)
	}
	defer zr.Close()
	out, err := io.ReadAll(io.LimitReader(zr, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("decode init-data annotation: gunzip: %v: %w", err, ErrInvalid)
	}
	if len(out) > MaxSize {
		return nil, fmt.Errorf("decode init-data annotation: gunzipped document exceeds %d bytes: shrink the init-data: %w", MaxSize, ErrInvalid)
	}
	return out, nil
}

// Document is a parsed init-data document.
type Document struct {
	// Version is the document's "version", always Version.
	Version string
	// Algorithm is the digest algorithm: SHA256, SHA384 or SHA512.
	Algorithm string
	// Data maps file names (FileAA, FileCDH, FilePolicy, ...) to contents.
	Data map[string]string
	// Raw is the exact document bytes the digest is taken over.
	Raw []byte

	kbs       *KBSConfig
	policyURI string
}

// wire is the TOML shape of a document.
type wire struct {
	Version   *string           `toml:"version"`
	Algorithm *string           `toml:"algorithm"`
	Data      map[string]string `toml:"data"`
}

// aaConfig is the part of aa.toml Coffer reads (guest-components
// attestation-agent config: [token_configs.kbs] url, cert).
type aaConfig struct {
	TokenConfigs struct {
		KBS *struct {
			URL  string `toml:"url"`
			Cert string `toml:"cert"`
		} `toml:"kbs"`
	} `toml:"token_configs"`
}

// cdhConfig is the part of cdh.toml Coffer reads (guest-components
// confidential-data-hub config: [kbc] url, kbs_cert; [image]
// image_security_policy_uri).
type cdhConfig struct {
	KBC *struct {
		Name    string `toml:"name"`
		URL     string `toml:"url"`
		KBSCert string `toml:"kbs_cert"`
	} `toml:"kbc"`
	Image struct {
		ImageSecurityPolicyURI string `toml:"image_security_policy_uri"`
	} `toml:"image"`
}

// Parse parses raw as an init-data TOML document. It requires version
// "0.1.0", an algorithm of sha256, sha384 or sha512, no top-level keys
// other than version, algorithm and data, string values in [data], and
// well-formed TOML in data["aa.toml"] and data["cdh.toml"] when present.
// Errors wrap ErrInvalid and name the offending key or value.
func Parse(raw []byte) (*Document, error) {
	if len(raw) > MaxSize {
		return nil, fmt.Errorf("parse init-data: document is %d bytes: want at most %d: %w", len(raw), MaxSize, ErrInvalid)
	}
	var w wire
	dec := toml.NewDecoder(bytes.NewReader(raw)).DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			keys := make([]string, 0, len(strict.Errors))
			for _, e := range strict.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			sort.Strings(keys)
			return nil, fmt.Errorf("parse init-data: unknown keys %q: want only version, algorithm and [data]: %w", keys, ErrInvalid)
		}
		return nil, fmt.Errorf("parse init-data TOML: %v: %w", err, ErrInvalid)
	}
	if w.Version == nil {
		return nil, fmt.Errorf("parse init-data: no \"version\": want version = %q: %w", Version, ErrInvalid)
	}
	if *w.Version != Version {
		return nil, fmt.Errorf("parse init-data: version %q is not supported: want %q: %w", *w.Version, Version, ErrInvalid)
	}
	if w.Algorithm == nil {
		return nil, fmt.Errorf("parse init-data: no \"algorithm\": want sha256, sha384 or sha512: %w", ErrInvalid)
	}
	if newHash(*w.Algorithm) == nil {
		return nil, fmt.Errorf("parse init-data: algorithm %q is not supported: want sha256, sha384 or sha512: %w", *w.Algorithm, ErrInvalid)
	}
	d := &Document{Version: *w.Version, Algorithm: *w.Algorithm, Data: w.Data, Raw: bytes.Clone(raw)}
	if d.Data == nil {
		d.Data = map[string]string{}
	}
	if err := d.parseFiles(); err != nil {
		return nil, err
	}
	return d, nil
}

// parseFiles reads the KBS settings and image policy URI from aa.toml and
// cdh.toml.
func (d *Document) parseFiles() error {
	var aa aaConfig
	if s, ok := d.Data[FileAA]; ok {
		if err := toml.Unmarshal([]byte(s), &aa); err != nil {
			return fmt.Errorf("parse init-data data[%q]: %v: %w", FileAA, err, ErrInvalid)
		}
	}
	var cdh cdhConfig
	if s, ok := d.Data[FileCDH]; ok {
		if err := toml.Unmarshal([]byte(s), &cdh); err != nil {
			return fmt.Errorf("parse init-data data[%q]: %v: %w", FileCDH, err, ErrInvalid)
		}
	}
	d.policyURI = cdh.Image.ImageSecurityPolicyURI
	switch {
	case aa.TokenConfigs.KBS != nil:
		if aa.TokenConfigs.KBS.URL == "" {
			return fmt.Errorf("parse init-data data[%q]: [token_configs.kbs] has no url: set url = \"https://host:port\": %w", FileAA, ErrInvalid)
		}
		d.kbs = &KBSConfig{URL: aa.TokenConfigs.KBS.URL, CertPEM: aa.TokenConfigs.KBS.Cert}
	case cdh.KBC != nil && cdh.KBC.URL != "":
		d.kbs = &KBSConfig{URL: cdh.KBC.URL, CertPEM: cdh.KBC.KBSCert}
	}
	return nil
}

// Digest returns the document's Algorithm over Raw: 32 bytes for sha256,
// 48 for sha384, 64 for sha512.
func (d *Document) Digest() []byte {
	return Sum(d.Algorithm, d.Raw)
}

// Sum returns the hash named alg (SHA256, SHA384 or SHA512) of b; an
// unknown alg yields nil. Parse guarantees a known Algorithm.
func Sum(alg string, b []byte) []byte {
	h := newHash(alg)
	if h == nil {
		return nil
	}
	h.Write(b)
	return h.Sum(nil)
}

// newHash returns a hash for alg, or nil when alg is not one of SHA256,
// SHA384, SHA512.
func newHash(alg string) hash.Hash {
	switch alg {
	case SHA256:
		return sha256.New()
	case SHA384:
		return sha512.New384()
	case SHA512:
		return sha512.New()
	}
	return nil
}

// Field sizes init-data digests are fitted to, bytes.
const (
	// SizeHostData is SNP's (and sim's) HOST_DATA.
	SizeHostData = 32
	// SizeMRConfigID is TDX's MRCONFIGID.
	SizeMRConfigID = 48
)

// Fit returns digest zero-padded or truncated to n bytes (Trustee verifier
// regularize_data): n is SizeHostData for SNP and sim, SizeMRConfigID for
// TDX. A nil digest yields n zero bytes.
func Fit(digest []byte, n int) []byte {
	out := make([]byte, n)
	copy(out, digest)
	return out
}

// KBSConfig is where the guest's attestation agent reaches the KBS.
type KBSConfig struct {
	// URL is the KBS base URL, e.g. "https://10.0.2.100:8080".
	URL string
	// CertPEM is the PEM certificate the KBS's TLS must present (pinned);
	// "" means the system roots.
	CertPEM string
}

// KBS returns the KBS settings from aa.toml [token_configs.kbs] (url,
// cert), else from cdh.toml [kbc] (url, kbs_cert); nil, nil when neither
// names a KBS. Parse has already checked both files, so the error is
// always nil for a Document from Parse.
func (d *Document) KBS() (*KBSConfig, error) {
	if d.kbs == nil {
		return nil, nil
	}
	c := *d.kbs
	return &c, nil
}

// ImageSecurityPolicyURI returns cdh.toml [image]
// image_security_policy_uri (e.g. "kbs:///default/security-policy/test"),
// or "" when unset.
func (d *Document) ImageSecurityPolicyURI() string {
	return d.policyURI
}

// AgentPolicy returns data["policy.rego"], or "" when absent.
func (d *Document) AgentPolicy() string {
	return d.Data[FilePolicy]
}
