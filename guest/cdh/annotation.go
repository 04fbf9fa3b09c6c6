package cdh

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
)

// Names of CoCo's ocicrypt key provider, as the image layer annotations
// and ocicrypt's key-wrapper registry spell them (ocicrypt
// keywrap/keyprovider; guest-components confidential-data-hub image
// annotation_packet).
const (
	// ProviderName is the ocicrypt key provider name.
	ProviderName = "attestation-agent"
	// AnnotationKeyProvider is the layer descriptor annotation holding the
	// wrapped layer key: comma-separated standard base64 (padded) of
	// AnnotationPacket JSON, one per recipient.
	AnnotationKeyProvider = "org.opencontainers.image.enc.keys.provider." + ProviderName
	// AnnotationPubOpts is ocicrypt's layer annotation holding the public
	// block-cipher options (cipher type, HMAC): standard base64 of JSON.
	AnnotationPubOpts = "org.opencontainers.image.enc.pubopts"
	// WrapTypeA256GCM is the only wrap_type accepted: AES-256-GCM with a
	// 12-byte IV and a 16-byte tag appended to the ciphertext, no
	// additional data.
	WrapTypeA256GCM = "A256GCM"
	// KEKSize is the size of a key-encryption key, bytes (AES-256).
	KEKSize = 32
	// packetVersion is the only AnnotationPacket version (v2 format).
	packetVersion = "0.1.0"
	// providerKBS is the only AnnotationPacket provider: the KEK is the KBS
	// resource named by kid.
	providerKBS = "kbs"
	// maxPacketSize bounds one decoded annotation packet, bytes.
	maxPacketSize = 64 << 10
)

// AnnotationPacket is CoCo's wrapped layer key (guest-components
// confidential-data-hub image/annotation_packet, v1 and v2 formats): the
// ocicrypt PrivateLayerBlockCipherOptions JSON sealed with AES-256-GCM under
// the key-encryption key stored in the KBS at Kid.
type AnnotationPacket struct {
	// Version is "0.1.0" or absent (v1 packets).
	Version string `json:"version,omitempty"`
	// Kid is the KEK's resource URI, "kbs:///repo/type/tag".
	Kid string `json:"kid"`
	// WrappedData is standard base64 of the GCM ciphertext with its
	// 16-byte tag.
	WrappedData string `json:"wrapped_data"`
	// Provider is "kbs" or absent; other (KMS) providers are refused.
	Provider string `json:"provider,omitempty"`
	// IV is standard base64 of the 12-byte GCM nonce.
	IV string `json:"iv"`
	// WrapType is "A256GCM".
	WrapType string `json:"wrap_type"`
	// ProviderSettings and Annotations belong to KMS providers; they are
	// accepted and ignored for provider "kbs".
	ProviderSettings map[string]any `json:"provider_settings,omitempty"`
	Annotations      map[string]any `json:"annotations,omitempty"`
}

// WrapLayerKey seals optsData (ocicrypt's PrivateLayerBlockCipherOptions
// JSON for one layer) with AES-256-GCM under kek (KEKSize bytes), with a
// fresh random 12-byte IV, and returns the value of the
// AnnotationKeyProvider layer annotation: standard base64 of the
// AnnotationPacket JSON {kid, wrapped_data, iv, wrap_type:"A256GCM"}, as
// CoCo's coco-keyprovider writes it. kid must be a valid resource URI
// (ParseResourceURI). Errors wrap errdefs.ErrInvalidArgument.
func WrapLayerKey(kek []byte, kid string, optsData []byte) (string, error) {
	packet, err := wrapPacket(kek, kid, optsData)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(packet), nil
}

// wrapPacket returns the AnnotationPacket JSON sealing optsData.
func wrapPacket(kek []byte, kid string, optsData []byte) ([]byte, error) {
	if _, err := ParseResourceURI(kid); err != nil {
		return nil, fmt.Errorf("wrap layer key: %w", err)
	}
	aead, err := newGCM(kek)
	if err != nil {
		return nil, fmt.Errorf("wrap layer key with %s: %w", kid, err)
	}
	iv := make([]byte, aead.NonceSize())
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("wrap layer key with %s: generate IV: %w", kid, err)
	}
	return json.Marshal(AnnotationPacket{
		Kid:         kid,
		WrappedData: base64.StdEncoding.EncodeToString(aead.Seal(nil, iv, optsData, nil)),
		IV:          base64.StdEncoding.EncodeToString(iv),
		WrapType:    WrapTypeA256GCM,
	})
}

// newGCM returns AES-256-GCM under kek, refusing keys of another size.
func newGCM(kek []byte) (cipher.AEAD, error) {
	if len(kek) != KEKSize {
		return nil, fmt.Errorf("key is %d bytes, want %d (AES-256): %w", len(kek), KEKSize, errdefs.ErrInvalidArgument)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("AES key: %w", err)
	}
	return cipher.NewGCM(block)
}

// parsePackets splits an AnnotationKeyProvider value into its packets
// (comma-separated base64 JSON, one per recipient) and checks each one's
// fields. Errors wrap errdefs.ErrInvalidArgument and name the packet.
func parsePackets(value string) ([]AnnotationPacket, error) {
	var out []AnnotationPacket
	for i, b64 := range strings.Split(value, ",") {
		p, err := parsePacket(b64)
		if err != nil {
			return nil, fmt.Errorf("annotation %s, packet %d: %w", AnnotationKeyProvider, i+1, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// parsePacket decodes one base64 AnnotationPacket and checks its fields.
func parsePacket(b64 string) (AnnotationPacket, error) {
	var p AnnotationPacket
	if base64.StdEncoding.DecodedLen(len(b64)) > maxPacketSize {
		return p, fmt.Errorf("%d bytes of base64, more than %d bytes decoded: %w", len(b64), maxPacketSize, errdefs.ErrInvalidArgument)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil {
		return p, fmt.Errorf("decode base64: %v: want standard base64 of the AnnotationPacket JSON: %w", err, errdefs.ErrInvalidArgument)
	}
	return decodePacket(raw)
}

// decodePacket parses AnnotationPacket JSON and checks its fields.
func decodePacket(raw []byte) (AnnotationPacket, error) {
	var p AnnotationPacket
	if err := json.Unmarshal(raw, &p); err != nil {
		return p, fmt.Errorf("decode JSON: %v: want {\"kid\",\"wrapped_data\",\"iv\",\"wrap_type\"}: %w", err, errdefs.ErrInvalidArgument)
	}
	switch {
	case p.Kid == "":
		return p, fmt.Errorf("no kid: want the key's resource URI, kbs:///<repository>/<type>/<tag>: %w", errdefs.ErrInvalidArgument)
	case p.Version != "" && p.Version != packetVersion:
		return p, fmt.Errorf("kid %s: version %q, want %q: %w", p.Kid, p.Version, packetVersion, errdefs.ErrInvalidArgument)
	case p.Provider != "" && p.Provider != providerKBS:
		return p, fmt.Errorf("kid %s: provider %q: only %q (keys held by the KBS) is supported: %w", p.Kid, p.Provider, providerKBS, errdefs.ErrNotImplemented)
	case p.WrapType != WrapTypeA256GCM:
		return p, fmt.Errorf("kid %s: wrap_type %q, want %q (authenticated key wrapping): %w", p.Kid, p.WrapType, WrapTypeA256GCM, errdefs.ErrInvalidArgument)
	case p.WrappedData == "":
		return p, fmt.Errorf("kid %s: no wrapped_data: %w", p.Kid, errdefs.ErrInvalidArgument)
	case p.IV == "":
		return p, fmt.Errorf("kid %s: no iv: %w", p.Kid, errdefs.ErrInvalidArgument)
	}
	if _, err := ParseResourceURI(p.Kid); err != nil {
		return p, fmt.Errorf("kid: %w", err)
	}
	return p, nil
}

// open decrypts the packet's wrapped_data under kek. A key of the wrong
// size or a GCM authentication failure is a wrongKeyError.
func (p AnnotationPacket) open(kek []byte) ([]byte, error) {
	ct, err := base64.StdEncoding.DecodeString(p.WrappedData)
	if err != nil {
		return nil, fmt.Errorf("decode wrapped_data: %v: want standard base64: %w", err, errdefs.ErrInvalidArgument)
	}
	iv, err := base64.StdEncoding.DecodeString(p.IV)
	if err != nil {
		return nil, fmt.Errorf("decode iv: %v: want standard base64: %w", err, errdefs.ErrInvalidArgument)
	}
	aead, err := newGCM(kek)
	if err != nil {
		return nil, wrongKeyError{err}
	}
	if len(iv) != aead.NonceSize() {
		return nil, fmt.Errorf("iv is %d bytes, want %d: %w", len(iv), aead.NonceSize(), errdefs.ErrInvalidArgument)
	}
	opts, err := aead.Open(nil, iv, ct, nil)
	if err != nil {
		return nil, wrongKeyError{errors.New("AES-256-GCM authentication of wrapped_data failed")}
	}
	return opts, nil
}
