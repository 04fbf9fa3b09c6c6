package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/urfave/cli/v2"

	"github.com/cofferhq/coffer/guest/imagepolicy"
)

// imageSignCommand returns `ccctl image sign`.
func imageSignCommand() *cli.Command {
	return &cli.Command{
		Name:      "sign",
		Usage:     "sign an image in its registry with an ECDSA P-256 key (cosign key-based layout)",
		ArgsUsage: "REF",
		Description: "Resolves REF at its registry (a tag resolves to the index or manifest digest it\n" +
			"names), signs that digest and pushes the signature in cosign's layout: tag\n" +
			"sha256-<hex>.sig in the same repository, a simple-signing payload layer claiming\n" +
			"REF (normalized, with its tag) and the signature in annotation\n" +
			"dev.cosignproject.cosign/signature. Existing signatures are kept. Registry\n" +
			"credentials come from ~/.docker/config.json.\n" +
			"Prints a containers-policy.json that trusts the key for REF's repository; store it\n" +
			"in cc-kbs (ccctl kbs resource set default/security-policy/NAME --file FILE) and\n" +
			"name it in init-data cdh.toml: [image] image_security_policy_uri.\n" +
			"`ccctl image sign --generate-key FILE` writes a new key pair: FILE (PKCS #8 PEM,\n" +
			"mode 0600) and FILE.pub (PKIX PEM).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "key", Usage: "ECDSA P-256 private key `FILE` (unencrypted PKCS #8 PEM)"},
			&cli.StringFlag{Name: "generate-key", Usage: "write a new key pair to `FILE` and FILE.pub, and exit"},
			&cli.BoolFlag{Name: "insecure-registry", Usage: "talk plain HTTP to the registry"},
			&cli.StringFlag{Name: "identity", Usage: "claim `REF` instead of the reference signed (critical.identity.docker-reference)"},
		},
		Action: func(c *cli.Context) error {
			if path := c.String("generate-key"); path != "" {
				if c.NArg() != 0 || c.String("key") != "" {
					return errors.New("image sign --generate-key FILE takes no image reference and no --key")
				}
				return generateSigningKey(c.App.Writer, path)
			}
			if c.NArg() != 1 {
				return fmt.Errorf("image sign: want exactly one image reference, got %d arguments", c.NArg())
			}
			if c.String("key") == "" {
				return errors.New("image sign: --key FILE is required (create one with `ccctl image sign --generate-key FILE`)")
			}
			return signImage(c.Context, c.App.Writer, signRequest{
				Ref:      c.Args().First(),
				KeyPath:  c.String("key"),
				Insecure: c.Bool("insecure-registry"),
				Identity: c.String("identity"),
			})
		},
	}
}

// signRequest holds the parsed flags of `ccctl image sign`.
type signRequest struct {
	Ref      string // the image reference to sign
	KeyPath  string // PKCS #8 PEM ECDSA P-256 private key
	Insecure bool   // plain HTTP to the registry
	Identity string // claimed reference override, "" for Ref
}

// signImage signs req.Ref and prints what was pushed and a policy trusting
// the key for the image's repository.
func signImage(ctx context.Context, w io.Writer, req signRequest) error {
	key, err := loadSigningKey(req.KeyPath)
	if err != nil {
		return err
	}
	signer, err := signature.LoadECDSASigner(key, crypto.SHA256)
	if err != nil {
		return fmt.Errorf("load signer from %s: %w", req.KeyPath, err)
	}
	opts := imagepolicy.SignOptions{
		Identity:      req.Identity,
		RemoteOptions: []remote.Option{remote.WithAuthFromKeychain(authn.DefaultKeychain)},
	}
	if req.Insecure {
		opts.NameOptions = []name.Option{name.Insecure}
	}
	signed, err := imagepolicy.Sign(ctx, req.Ref, signer, opts)
	if err != nil {
		return err
	}
	policy, err := signingPolicy(signed.Repository, key.Public())
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "signed %s@%s\nidentity:  %s\nsignature: %s (%d signature(s))\n\n", signed.Repository, signed.Digest, signed.Identity, signed.SignatureRef, signed.Signatures)
	fmt.Fprintf(w, "image security policy (containers-policy.json) trusting this key for %s:\n%s\n", signed.Repository, policy)
	return nil
}

// signingPolicy returns a containers-policy.json that rejects every image
// but those of repo signed by pub.
func signingPolicy(repo string, pub crypto.PublicKey) ([]byte, error) {
	pemPub, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	doc := map[string]any{
		"default": []map[string]string{{"type": string(imagepolicy.Reject)}},
		"transports": map[string]any{
			imagepolicy.TransportDocker: map[string]any{
				repo: []map[string]string{{
					"type":    string(imagepolicy.SigstoreSigned),
					"keyData": base64.StdEncoding.EncodeToString(pemPub),
				}},
			},
		},
	}
	return json.MarshalIndent(doc, "", "  ")
}

// loadSigningKey reads an unencrypted PKCS #8 PEM ECDSA P-256 private key.
func loadSigningKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	switch {
	case blk == nil:
		return nil, fmt.Errorf("read signing key %s: no PEM block: want an unencrypted PKCS #8 \"PRIVATE KEY\" (ccctl image sign --generate-key)", path)
	case blk.Type != "PRIVATE KEY":
		return nil, fmt.Errorf("read signing key %s: PEM block is %q, want an unencrypted PKCS #8 \"PRIVATE KEY\" (encrypted cosign keys are not supported; ccctl image sign --generate-key makes one)", path, blk.Type)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read signing key %s: parse PKCS #8: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("read signing key %s: key is %T, want ECDSA P-256", path, k)
	}
	return ek, nil
}

// generateSigningKey writes a new ECDSA P-256 key pair to path (PKCS #8
// PEM, 0600) and path.pub (PKIX PEM, 0644), refusing to overwrite.
func generateSigningKey(w io.Writer, path string) error {
	k, priv, err := newP256Key()
	if err != nil {
		return err
	}
	pub, err := cryptoutils.MarshalPublicKeyToPEM(k.Public())
	if err != nil {
		return fmt.Errorf("encode public key: %w", err)
	}
	if err := kbsWriteNew(path, priv, 0o600); err != nil {
		return err
	}
	if err := kbsWriteNew(path+".pub", pub, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(w, "private key: %s (keep it secret)\npublic key:  %s (its base64 is the policy's keyData)\n", path, path+".pub")
	return nil
}

// newP256Key generates an ECDSA P-256 key and returns it with its
// unencrypted PKCS #8 PEM encoding (the format loadSigningKey reads).
func newP256Key() (*ecdsa.PrivateKey, []byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	priv, err := cryptoutils.MarshalPrivateKeyToPEM(k)
	if err != nil {
		return nil, nil, fmt.Errorf("encode private key: %w", err)
	}
	return k, priv, nil
}
