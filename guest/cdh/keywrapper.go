package cdh

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containers/ocicrypt/config"
	"github.com/containers/ocicrypt/keywrap"
)

// KeyWrapper adapts p to ocicrypt's keywrap.KeyWrapper, so code that uses
// ocicrypt's own layer functions (ocicrypt.DecryptLayer, containerd's
// imgcrypt) can use the KBS in-process, with no keyprovider binary or gRPC
// server:
//
//	ocicrypt.RegisterKeyWrapper("provider."+cdh.ProviderName, p.KeyWrapper(ctx))
//
// ctx bounds the key fetches of every UnwrapKey call (ocicrypt's interface
// carries no context). Unwrapping ignores the DecryptConfig. Wrapping
// follows CoCo's coco-keyprovider parameters: each
// EncryptConfig.Parameters["attestation-agent"] entry is
// "keyid=kbs:///repo/type/tag::keypath=/path/to/32-byte-kek[::algorithm=A256GCM]"
// (what `--encryption-key provider:attestation-agent:keyid=…::keypath=…`
// passes through ocicrypt's helpers); without entries WrapKeys returns
// nil, as ocicrypt expects of a wrapper it was not asked to use.
func (p *KeyProvider) KeyWrapper(ctx context.Context) keywrap.KeyWrapper {
	return &keyWrapper{ctx: ctx, p: p}
}

// keyWrapper is the keywrap.KeyWrapper of KeyProvider.KeyWrapper.
type keyWrapper struct {
	ctx context.Context
	p   *KeyProvider
}

// GetAnnotationID returns AnnotationKeyProvider.
func (w *keyWrapper) GetAnnotationID() string { return AnnotationKeyProvider }

// UnwrapKey opens one AnnotationPacket JSON (ocicrypt has already split the
// annotation and base64-decoded it) and returns the optsData.
func (w *keyWrapper) UnwrapKey(_ *config.DecryptConfig, annotation []byte) ([]byte, error) {
	pk, err := decodePacket(annotation)
	if err != nil {
		return nil, fmt.Errorf("%s key provider: %w", ProviderName, err)
	}
	u := unwrapper{ctx: w.ctx, get: w.p.getter, keks: map[string][]byte{}}
	defer u.forget()
	// ocicrypt does not tell a key wrapper which layer it unwraps for.
	return u.unwrap("", []AnnotationPacket{pk})
}

// WrapKeys wraps optsData for every Parameters[ProviderName] entry and
// returns the AnnotationPacket JSON; ocicrypt base64-encodes it. Several
// entries are refused: ocicrypt joins the outputs of different wrappers,
// not several outputs of one.
func (w *keyWrapper) WrapKeys(ec *config.EncryptConfig, optsData []byte) ([]byte, error) {
	params := ec.Parameters[ProviderName]
	switch len(params) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, fmt.Errorf("%s key provider: %d key parameters given, want one keyid=…::keypath=…: %w", ProviderName, len(params), errdefs.ErrInvalidArgument)
	}
	kid, keyPath, err := parseWrapParams(string(params[0]))
	if err != nil {
		return nil, err
	}
	kek, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("%s key provider: read key-encryption key: %w", ProviderName, err)
	}
	defer clear(kek)
	return wrapPacket(kek, kid, optsData)
}

// parseWrapParams parses "keyid=…::keypath=…[::algorithm=A256GCM]".
func parseWrapParams(s string) (kid, keyPath string, err error) {
	for _, field := range strings.Split(s, "::") {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return "", "", fmt.Errorf("%s key provider: parameter %q is not key=value: want keyid=kbs:///…::keypath=FILE: %w", ProviderName, field, errdefs.ErrInvalidArgument)
		}
		switch k {
		case "keyid":
			kid = v
		case "keypath":
			keyPath = v
		case "algorithm":
			if v != WrapTypeA256GCM {
				return "", "", fmt.Errorf("%s key provider: algorithm %q: only %s is supported: %w", ProviderName, v, WrapTypeA256GCM, errdefs.ErrNotImplemented)
			}
		default:
			return "", "", fmt.Errorf("%s key provider: unknown parameter %q: want keyid, keypath, algorithm: %w", ProviderName, k, errdefs.ErrInvalidArgument)
		}
	}
	if kid == "" || keyPath == "" {
		return "", "", fmt.Errorf("%s key provider: parameters %q lack keyid or keypath: want keyid=kbs:///…::keypath=FILE: %w", ProviderName, s, errdefs.ErrInvalidArgument)
	}
	return kid, keyPath, nil
}

// NoPossibleKeys returns false: the keys are in the KBS, not in the
// DecryptConfig.
func (w *keyWrapper) NoPossibleKeys(map[string][][]byte) bool { return false }

// GetPrivateKeys returns nil: no private key is held locally.
func (w *keyWrapper) GetPrivateKeys(map[string][][]byte) [][]byte { return nil }

// GetKeyIdsFromPacket returns nil: packets carry resource URIs, not
// numeric key IDs.
func (w *keyWrapper) GetKeyIdsFromPacket(string) ([]uint64, error) { return nil, nil }

// GetRecipients returns nil: the recipient is whoever the KBS releases
// the key to.
func (w *keyWrapper) GetRecipients(string) ([]string, error) { return nil, nil }
