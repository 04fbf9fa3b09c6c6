package sim

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-sev-guest/kds"
)

// File names in a sim chain directory (WriteDir, Load).
const (
	// RootFile is the trust anchor (ASK then ARK, PEM): give this to a KBS
	// or to `ccctl attest verify --sim-root`.
	RootFile = "root.pem"
	// VCEKFile is the VCEK at the chain's default TCB (PEM); it also records
	// the chip ID and default TCB.
	VCEKFile    = "vcek.pem"
	arkFile     = "ark.pem"
	askFile     = "ask.pem"
	arkKeyFile  = "ark.key"
	askKeyFile  = "ask.key"
	vcekKeyFile = "vcek.key"
)

// WriteDir writes the chain to dir (created with mode 0700 if missing):
// root.pem, ark.pem, ask.pem and vcek.pem (certificates, mode 0644) and
// ark.key, ask.key and vcek.key (PKCS #8 PEM private keys, mode 0600). Each
// file is written to a temporary name and renamed, so none is left
// half-written.
func (s *Signer) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write sim chain: %w", err)
	}
	vcek, err := s.VCEK(s.TCB)
	if err != nil {
		return err
	}
	certs := map[string][]byte{
		RootFile: s.RootPEM(),
		arkFile:  certPEM(s.ARK),
		askFile:  certPEM(s.ASK),
		VCEKFile: certPEM(vcek),
	}
	for name, b := range certs {
		if err := writeFileAtomic(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	keys := map[string]any{arkKeyFile: s.arkKey, askKeyFile: s.askKey, vcekKeyFile: s.vcekKey}
	for name, k := range keys {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return fmt.Errorf("write sim chain: encode %s: %w", name, err)
		}
		if err := writeFileAtomic(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// errNoKeys is returned by Load when a key file is of the wrong type.
var errNoKeys = errors.New("wrong key type")

// Load reads a chain written by WriteDir. It fails if a file is missing or
// malformed, a key does not match its certificate, or the ASK is not signed
// by the ARK.
func Load(dir string) (*Signer, error) {
	readCert := func(name string) (*x509.Certificate, error) {
		b, err := readPEM(filepath.Join(dir, name), "CERTIFICATE")
		if err != nil {
			return nil, err
		}
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, fmt.Errorf("load sim chain: parse %s: %w", filepath.Join(dir, name), err)
		}
		return c, nil
	}
	readKey := func(name string) (any, error) {
		b, err := readPEM(filepath.Join(dir, name), "PRIVATE KEY")
		if err != nil {
			return nil, err
		}
		k, err := x509.ParsePKCS8PrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("load sim chain: parse %s: %w", filepath.Join(dir, name), err)
		}
		return k, nil
	}
	ark, err := readCert(arkFile)
	if err != nil {
		return nil, err
	}
	ask, err := readCert(askFile)
	if err != nil {
		return nil, err
	}
	vcek, err := readCert(VCEKFile)
	if err != nil {
		return nil, err
	}
	keys := make([]any, 3)
	for i, name := range []string{arkKeyFile, askKeyFile, vcekKeyFile} {
		if keys[i], err = readKey(name); err != nil {
			return nil, err
		}
	}
	arkKey, ok1 := keys[0].(*rsa.PrivateKey)
	askKey, ok2 := keys[1].(*rsa.PrivateKey)
	vcekKey, ok3 := keys[2].(*ecdsa.PrivateKey)
	if !ok1 || !ok2 || !ok3 {
		return nil, fmt.Errorf("load sim chain from %s: %w: want RSA ark.key and ask.key and an ECDSA vcek.key", dir, errNoKeys)
	}
	if !arkKey.PublicKey.Equal(ark.PublicKey) || !askKey.PublicKey.Equal(ask.PublicKey) || !vcekKey.PublicKey.Equal(vcek.PublicKey) {
		return nil, fmt.Errorf("load sim chain from %s: a private key does not match its certificate", dir)
	}
	if err := ask.CheckSignatureFrom(ark); err != nil {
		return nil, fmt.Errorf("load sim chain from %s: ASK is not signed by the ARK: %w", dir, err)
	}
	exts, err := kds.VcekCertificateExtensions(vcek)
	if err != nil {
		return nil, fmt.Errorf("load sim chain from %s: VCEK extensions: %w", dir, err)
	}
	s := newSigner(ark, ask, arkKey, askKey, vcekKey, exts.HWID, kds.DecomposeTCBVersion(exts.TCBVersion))
	s.vceks[exts.TCBVersion] = vcek
	return s, nil
}

func readPEM(path, typ string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load sim chain: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != typ {
		return nil, fmt.Errorf("load sim chain: %s holds no PEM %q block", path, typ)
	}
	return blk.Bytes, nil
}
