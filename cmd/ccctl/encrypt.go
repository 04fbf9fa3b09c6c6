package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"strings"

	"github.com/containerd/platforms"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/urfave/cli/v2"

	"github.com/cofferhq/coffer/guest/cdh"
	"github.com/cofferhq/coffer/kbs/admin"
	"github.com/cofferhq/coffer/kbs/adminclient"
	"github.com/cofferhq/coffer/kbs/client"
)

// imageEncryptCommand returns `ccctl image encrypt`: ocicrypt-encrypt every
// layer of an image for CoCo's "attestation-agent" key provider, register
// the key-encryption key in cc-kbs (or use a key file), and push the result.
func imageEncryptCommand() *cli.Command {
	return &cli.Command{
		Name:      "encrypt",
		Usage:     "encrypt an image's layers with a key held by cc-kbs, and push it",
		ArgsUsage: "SRC DST",
		Description: "Encrypts every layer of SRC with ocicrypt (AES-256-CTR with HMAC-SHA256, a random\n" +
			"key per layer) and wraps each layer key with AES-256-GCM under one 32-byte key-\n" +
			"encryption key, in CoCo's annotation format (org.opencontainers.image.enc.keys.\n" +
			"provider.attestation-agent, kid = --key-id), so the guest decrypts it once the KBS\n" +
			"releases that key after attestation (CoCo's tooling can decrypt it too). Pushes DST and\n" +
			"prints its manifest digest.\n\n" +
			"With --kbs, a fresh random key is generated and registered in cc-kbs as the resource\n" +
			"--key-id names (refused if that resource exists: it may protect other images).\n" +
			"With --key-file, the existing 32-byte raw key in FILE is used and nothing is registered.\n" +
			"SRC may be an index: the --platform manifest is encrypted, DST is a single manifest.\n" +
			"Layers are spooled encrypted to a temporary directory ($TMPDIR) before the push.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "kbs", Usage: "register the new key in the cc-kbs at `URL`"},
			&cli.StringFlag{Name: "kbs-cert", EnvVars: []string{"CC_KBS_CACERT"}, Usage: "trust the KBS certificate (or its CA) in PEM `FILE`"},
			&cli.StringFlag{Name: "kbs-cert-sha256", EnvVars: []string{"CC_KBS_CERT_SHA256"}, Usage: "or pin the KBS certificate by its SHA-256 `HEX`"},
			&cli.StringFlag{Name: "admin-key", EnvVars: []string{"CC_KBS_ADMIN_KEY"}, Usage: "Ed25519 admin private key `FILE` (PKCS #8 PEM), with --kbs"},
			&cli.StringFlag{Name: "key-id", Required: true, Usage: "the key's resource `URI`, kbs:///<repository>/<type>/<tag> (e.g. kbs:///default/key/app)"},
			&cli.StringFlag{Name: "key-file", Usage: "use the existing 32-byte raw key in `FILE` instead of registering a new one"},
			&cli.BoolFlag{Name: "insecure-registry", Usage: "talk plain HTTP to the SRC and DST registries"},
			&cli.StringFlag{Name: "platform", Value: platforms.DefaultString(), Usage: "`PLATFORM` of the manifest to encrypt when SRC is an index"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return fmt.Errorf("image encrypt: want SRC and DST image references, got %d arguments", c.NArg())
			}
			plat, err := v1.ParsePlatform(c.String("platform"))
			if err != nil {
				return fmt.Errorf("image encrypt: --platform %q: %w", c.String("platform"), err)
			}
			req := encryptRequest{
				Src:      c.Args().Get(0),
				Dst:      c.Args().Get(1),
				KeyID:    c.String("key-id"),
				Insecure: c.Bool("insecure-registry"),
				Platform: *plat,
			}
			if _, err := cdh.ParseResourceURI(req.KeyID); err != nil {
				return fmt.Errorf("image encrypt: --key-id: %w", err)
			}
			var register func(context.Context) error
			switch {
			case c.String("kbs") != "" && c.String("key-file") != "":
				return errors.New("image encrypt: give --kbs (register a new key) or --key-file (use an existing key), not both")
			case c.String("key-file") != "":
				if req.KEK, err = readKEK(c.String("key-file")); err != nil {
					return fmt.Errorf("image encrypt: %w", err)
				}
			case c.String("kbs") != "":
				ac, err := encryptAdminClient(c)
				if err != nil {
					return fmt.Errorf("image encrypt: %w", err)
				}
				// Refuse an existing resource before any work: replacing a
				// key would make every image encrypted under it unreadable.
				if err := checkResourceFree(c.Context, ac, req.KeyID); err != nil {
					return fmt.Errorf("image encrypt: %w", err)
				}
				req.KEK = make([]byte, cdh.KEKSize)
				if _, err := rand.Read(req.KEK); err != nil {
					return fmt.Errorf("image encrypt: generate the key-encryption key: %w", err)
				}
				register = func(ctx context.Context) error { return registerKEK(ctx, ac, req.KeyID, req.KEK) }
			default:
				return errors.New("image encrypt: give --kbs URL (with --admin-key) to register a new key in cc-kbs, or --key-file FILE to use an existing 32-byte key")
			}
			defer clear(req.KEK)

			res, err := encryptImage(c.Context, req)
			if err != nil {
				return fmt.Errorf("image encrypt: %w", err)
			}
			if register != nil {
				if err := register(c.Context); err != nil {
					return fmt.Errorf("image encrypt: %s@%s was pushed, but its key was not registered, so it cannot be decrypted: run the command again (a new key, DST overwritten): %w", req.Dst, res.Digest, err)
				}
				fmt.Fprintf(c.App.ErrWriter, "ccctl: key-encryption key registered in %s as %s\n", c.String("kbs"), req.KeyID)
			}
			fmt.Fprintf(c.App.ErrWriter, "ccctl: encrypted %d layers of %s under %s; pushed %s\n", res.Layers, req.Src, req.KeyID, req.Dst)
			fmt.Fprintln(c.App.Writer, res.Digest)
			return nil
		},
	}
}

// encryptAdminClient builds the cc-kbs admin client from the encrypt flags.
func encryptAdminClient(c *cli.Context) (*adminclient.Client, error) {
	if c.String("admin-key") == "" {
		return nil, errors.New("--kbs needs --admin-key: the Ed25519 private key from `ccctl kbs keygen-admin`")
	}
	key, err := admin.LoadPrivateKey(c.String("admin-key"))
	if err != nil {
		return nil, err
	}
	url := c.String("kbs")
	if strings.HasPrefix(url, "http://") {
		fmt.Fprintln(c.App.ErrWriter, "ccctl: warning: plain HTTP: the KBS is not authenticated and the key crosses the network in the clear")
	}
	hc, err := adminclient.NewHTTPClient(adminclient.HTTPClientOptions{PinSHA256: c.String("kbs-cert-sha256"), CACert: c.String("kbs-cert")})
	if err != nil {
		return nil, err
	}
	return adminclient.New(url, key, adminclient.Options{HTTPClient: hc, Subject: kbsDefaultSubject()}), nil
}

// readKEK reads a raw 32-byte key-encryption key (CoCo's keypath format).
func readKEK(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read --key-file: %w", err)
	}
	if len(b) != cdh.KEKSize {
		clear(b)
		return nil, fmt.Errorf("--key-file %s holds %d bytes, want exactly %d raw bytes (AES-256; e.g. head -c 32 /dev/urandom > FILE)", path, len(b), cdh.KEKSize)
	}
	return b, nil
}

// checkResourceFree fails unless the KBS has no resource at kid.
func checkResourceFree(ctx context.Context, ac *adminclient.Client, kid string) error {
	p, err := cdh.ParseResourceURI(kid)
	if err != nil {
		return err
	}
	_, err = ac.GetResource(ctx, p.String())
	var re *client.ResponseError
	switch {
	case err == nil:
		return fmt.Errorf("the KBS already holds resource %s (--key-id %s): it may protect other images; choose another --key-id, or encrypt with that key via --key-file (ccctl kbs resource get %s --out FILE)", p, kid, p)
	case errors.As(err, &re) && re.Status == http.StatusNotFound:
		return nil
	default:
		return fmt.Errorf("check KBS resource %s: %w", p, err)
	}
}

// registerKEK stores kek in the KBS as the resource kid names.
func registerKEK(ctx context.Context, ac *adminclient.Client, kid string, kek []byte) error {
	p, err := cdh.ParseResourceURI(kid)
	if err != nil {
		return err
	}
	if _, err := ac.SetResource(ctx, p.String(), kek); err != nil {
		return fmt.Errorf("register the key as KBS resource %s: %w", p, err)
	}
	return nil
}

// encryptRequest is what `ccctl image encrypt` does, apart from the KBS.
type encryptRequest struct {
	// Src and Dst are image references; Src may name an index.
	Src, Dst string
	// KeyID is the kid written into every layer's annotation,
	// "kbs:///repo/type/tag".
	KeyID string
	// KEK is the 32-byte key-encryption key.
	KEK []byte
	// Insecure makes both registries plain HTTP.
	Insecure bool
	// Platform picks the manifest when Src is an index.
	Platform v1.Platform
	// Transport, if set, replaces the default registry transport.
	Transport http.RoundTripper
}

// encryptResult describes a pushed encrypted image.
type encryptResult struct {
	// Digest is the pushed manifest's digest.
	Digest v1.Hash
	// Layers is how many layers were encrypted.
	Layers int
}

// encryptImage fetches req.Src, encrypts each layer (cdh.EncryptLayer:
// ocicrypt AES-256-CTR-HMAC, key wrapped under req.KEK for req.KeyID),
// spooling the ciphertext to temporary files, and pushes a manifest with
// the "+encrypted" layers (config and its diff_ids unchanged: they name the
// plaintext) to req.Dst.
func encryptImage(ctx context.Context, req encryptRequest) (*encryptResult, error) {
	var nopts []name.Option
	if req.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	src, err := name.ParseReference(req.Src, nopts...)
	if err != nil {
		return nil, fmt.Errorf("parse SRC %q: %w", req.Src, err)
	}
	dst, err := name.ParseReference(req.Dst, nopts...)
	if err != nil {
		return nil, fmt.Errorf("parse DST %q: %w", req.Dst, err)
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain), remote.WithPlatform(req.Platform)}
	if req.Transport != nil {
		ropts = append(ropts, remote.WithTransport(req.Transport))
	}
	img, err := remote.Image(src, ropts...)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", req.Src, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("fetch the manifest of %s: %w", req.Src, err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("fetch the config of %s: %w", req.Src, err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, fmt.Errorf("manifest media type of %s: %w", req.Src, err)
	}

	enc := &encryptedImage{mt: mt, config: cfg, blobs: map[v1.Hash]*spooledLayer{}}
	defer enc.remove()
	out := m.DeepCopy()
	for i, d := range m.Layers {
		nd, err := enc.encryptLayer(img, d, req.KEK, req.KeyID)
		if err != nil {
			return nil, fmt.Errorf("layer %d of %d (%s): %w", i+1, len(m.Layers), d.Digest, err)
		}
		out.Layers[i] = nd
	}
	if enc.manifest, err = json.Marshal(out); err != nil {
		return nil, fmt.Errorf("encode the encrypted manifest: %w", err)
	}
	pushable, err := partial.CompressedToImage(enc)
	if err != nil {
		return nil, err
	}
	if err := remote.Write(dst, pushable, ropts...); err != nil {
		return nil, fmt.Errorf("push %s: %w", req.Dst, err)
	}
	sum := sha256.Sum256(enc.manifest)
	return &encryptResult{Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, Layers: len(m.Layers)}, nil
}

// encryptedImage is the image encryptImage pushes: the source config, a
// rewritten manifest and the spooled ciphertext blobs
// (partial.CompressedImageCore).
type encryptedImage struct {
	manifest []byte
	mt       types.MediaType
	config   []byte
	blobs    map[v1.Hash]*spooledLayer
}

// RawManifest implements partial.CompressedImageCore.
func (e *encryptedImage) RawManifest() ([]byte, error) { return e.manifest, nil }

// MediaType implements partial.CompressedImageCore.
func (e *encryptedImage) MediaType() (types.MediaType, error) { return e.mt, nil }

// RawConfigFile implements partial.CompressedImageCore.
func (e *encryptedImage) RawConfigFile() ([]byte, error) { return e.config, nil }

// LayerByDigest implements partial.CompressedImageCore.
func (e *encryptedImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := e.blobs[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("encrypted image has no layer %s", h)
}

// remove deletes the spooled blobs.
func (e *encryptedImage) remove() {
	for _, l := range e.blobs {
		os.Remove(l.path)
	}
}

// encryptLayer streams layer d of img through cdh.EncryptLayer into a
// temporary file and returns the encrypted layer's descriptor.
func (e *encryptedImage) encryptLayer(img v1.Image, d v1.Descriptor, kek []byte, kid string) (v1.Descriptor, error) {
	if strings.HasSuffix(string(d.MediaType), "+encrypted") {
		return v1.Descriptor{}, fmt.Errorf("media type %s: the layer is already encrypted", d.MediaType)
	}
	if !d.MediaType.IsLayer() {
		return v1.Descriptor{}, fmt.Errorf("media type %s is not a tar layer type ocicrypt encrypts", d.MediaType)
	}
	l, err := img.LayerByDigest(d.Digest)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("fetch: %w", err)
	}
	rc, err := l.Compressed() // go-containerregistry checks the digest as it reads
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("fetch: %w", err)
	}
	defer rc.Close()
	r, fin, err := cdh.EncryptLayer(rc, d.Digest.String(), kek, kid)
	if err != nil {
		return v1.Descriptor{}, err
	}
	f, err := os.CreateTemp("", "ccctl-encrypt-*.blob")
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("spool the ciphertext: %w", err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return v1.Descriptor{}, fmt.Errorf("encrypt into %s: %w", f.Name(), err)
	}
	sl := &spooledLayer{path: f.Name(), size: n, mt: d.MediaType + "+encrypted", digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}}
	e.blobs[sl.digest] = sl
	ann, err := fin()
	if err != nil {
		return v1.Descriptor{}, err
	}
	// Like ocicrypt: keep the layer's own annotations, replace any
	// encryption ones.
	out := v1.Descriptor{MediaType: sl.mt, Size: sl.size, Digest: sl.digest, Annotations: map[string]string{}}
	for k, v := range d.Annotations {
		if !strings.HasPrefix(k, "org.opencontainers.image.enc.") {
			out.Annotations[k] = v
		}
	}
	maps.Copy(out.Annotations, ann)
	return out, nil
}

// spooledLayer is an encrypted layer blob in a temporary file
// (partial.CompressedLayer).
type spooledLayer struct {
	path   string
	size   int64 // bytes
	mt     types.MediaType
	digest v1.Hash
}

// Digest implements partial.CompressedLayer.
func (s *spooledLayer) Digest() (v1.Hash, error) { return s.digest, nil }

// Compressed implements partial.CompressedLayer: the ciphertext.
func (s *spooledLayer) Compressed() (io.ReadCloser, error) { return os.Open(s.path) }

// Size implements partial.CompressedLayer.
func (s *spooledLayer) Size() (int64, error) { return s.size, nil }

// MediaType implements partial.CompressedLayer.
func (s *spooledLayer) MediaType() (types.MediaType, error) { return s.mt, nil }
