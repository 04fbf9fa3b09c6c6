// Package sim is Coffer's simulated TEE for development and CI: SNP-format
// attestation reports signed by a test-only ARK → ASK → VCEK chain that has
// the shape of AMD's (RSA ARK/ASK signing with RSASSA-PSS/SHA-384, an ECDSA
// P-384 VCEK carrying KDS extensions), verified by the same go-sev-guest
// verify/validate code as real SNP (attestation/snp) with the sim roots as
// the only trusted roots. Claims say tee "sim" and product "sim".
//
// Sim evidence never passes as real hardware: its chain does not end in
// AMD's ARK, and a sim verifier only trusts the sim root it is given.
package sim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/cofferhq/coffer/attestation/snp"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
)

// ProductName is the VCEK productName the sim claims, and ProductLine its
// product line; the sim's roots are trusted under this line only.
const (
	ProductName = "Milan-B1"
	ProductLine = snp.Milan
)

// DefaultPolicy is the guest policy of sim reports unless set: SMT allowed
// (bit 16), reserved bit 17 set, debug off.
const DefaultPolicy = 0x30000

// RSAKeyBits is the size of the sim ARK and ASK keys. AMD's are RSA-4096;
// the sim uses 2048 bits so that generating a chain in a test is fast.
const RSAKeyBits = 2048

// Signer holds a test-only ARK → ASK → VCEK chain and its private keys, and
// signs SNP-format reports. A VCEK is minted per REPORTED_TCB on demand, as
// AMD KDS issues one per TCB. Safe for concurrent use.
type Signer struct {
	// ARK is the self-signed sim root; ASK is the intermediate ("SEV-Milan").
	ARK, ASK *x509.Certificate
	// ChipID is the 64-byte CHIP_ID of the simulated chip (the VCEK's HWID).
	ChipID []byte
	// TCB is the default TCB of reports (reported, committed, current, launch).
	TCB kds.TCBParts

	arkKey, askKey *rsa.PrivateKey
	vcekKey        *ecdsa.PrivateKey

	mu    sync.Mutex
	vceks map[kds.TCBVersion]*x509.Certificate
}

// GenerateOptions parametrise Generate.
type GenerateOptions struct {
	// Now is the creation time; certificates are valid from a day before
	// (ARK/ASK for 25 years, VCEKs for 7). Zero means time.Now().
	Now time.Time
	// TCB is the chip's default TCB. Zero parts are allowed.
	TCB kds.TCBParts
	// ChipID is the 64-byte CHIP_ID; nil means random.
	ChipID []byte
}

// Generate creates a new random sim chain. It fails if ChipID is not 64
// bytes or a TCB component is out of range (non-ucode SPLs are 0-127).
func Generate(o GenerateOptions) (*Signer, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if _, err := kds.ComposeTCBParts(o.TCB); err != nil {
		return nil, fmt.Errorf("generate sim chain: TCB: %w", err)
	}
	chipID := o.ChipID
	if chipID == nil {
		chipID = make([]byte, abi.ChipIDSize)
		if _, err := rand.Read(chipID); err != nil {
			return nil, fmt.Errorf("generate sim chain: chip ID: %w", err)
		}
	}
	if len(chipID) != abi.ChipIDSize {
		return nil, fmt.Errorf("generate sim chain: chip ID is %d bytes, want %d", len(chipID), abi.ChipIDSize)
	}
	arkKey, err := rsa.GenerateKey(rand.Reader, RSAKeyBits)
	if err != nil {
		return nil, fmt.Errorf("generate sim ARK key: %w", err)
	}
	askKey, err := rsa.GenerateKey(rand.Reader, RSAKeyBits)
	if err != nil {
		return nil, fmt.Errorf("generate sim ASK key: %w", err)
	}
	vcekKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate sim VCEK key: %w", err)
	}
	notBefore := o.Now.Add(-24 * time.Hour)
	arkName := pkix.Name{
		Organization:       []string{"Coffer"},
		OrganizationalUnit: []string{"simulated TEE, test only"},
		CommonName:         "ARK-" + ProductLine + " (Coffer sim, TEST ONLY)",
	}
	arkTmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               arkName,
		NotBefore:             notBefore,
		NotAfter:              notBefore.AddDate(25, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SignatureAlgorithm:    x509.SHA384WithRSAPSS,
	}
	ark, err := createCert(arkTmpl, arkTmpl, &arkKey.PublicKey, arkKey)
	if err != nil {
		return nil, fmt.Errorf("create sim ARK: %w", err)
	}
	askTmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		// The VCEK's issuer must carry AMD's KDS naming for go-sev-guest to
		// accept its profile; the ARK above is what marks the chain as sim.
		Subject:               amdName("SEV-" + ProductLine),
		NotBefore:             notBefore,
		NotAfter:              notBefore.AddDate(25, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SignatureAlgorithm:    x509.SHA384WithRSAPSS,
	}
	ask, err := createCert(askTmpl, ark, &askKey.PublicKey, arkKey)
	if err != nil {
		return nil, fmt.Errorf("create sim ASK: %w", err)
	}
	return newSigner(ark, ask, arkKey, askKey, vcekKey, append([]byte(nil), chipID...), o.TCB), nil
}

func newSigner(ark, ask *x509.Certificate, arkKey, askKey *rsa.PrivateKey, vcekKey *ecdsa.PrivateKey, chipID []byte, tcb kds.TCBParts) *Signer {
	return &Signer{ARK: ark, ASK: ask, ChipID: chipID, TCB: tcb, arkKey: arkKey, askKey: askKey, vcekKey: vcekKey,
		vceks: map[kds.TCBVersion]*x509.Certificate{}}
}

func amdName(cn string) pkix.Name {
	return pkix.Name{
		Country:            []string{"US"},
		Locality:           []string{"Santa Clara"},
		Province:           []string{"CA"},
		Organization:       []string{"Advanced Micro Devices"},
		OrganizationalUnit: []string{"Engineering"},
		CommonName:         cn,
	}
}

func randSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return n.Add(n, big.NewInt(1))
}

func createCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, priv crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// RootPEM returns the sim trust anchor in AMD KDS cert_chain form (ASK, then
// ARK, PEM). This is what a KBS config or `ccctl attest verify --sim-root`
// names to accept sim evidence.
func (s *Signer) RootPEM() []byte { return snp.EncodeBundle(s.ASK, s.ARK) }

// VCEK returns the sim VCEK certificate for tcb, minting it on first use: an
// X.509 v3 certificate for the chip's P-384 key, signed by the ASK with
// RSASSA-PSS/SHA-384, carrying the KDS extensions (struct version 0,
// productName, the eight SPLs of tcb, and the raw 64-byte HWID). It fails if
// a TCB component is out of range.
func (s *Signer) VCEK(tcb kds.TCBParts) (*x509.Certificate, error) {
	v, err := kds.ComposeTCBParts(tcb)
	if err != nil {
		return nil, fmt.Errorf("mint sim VCEK: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.vceks[v]; ok {
		return c, nil
	}
	exts, err := vcekExtensions(tcb, s.ChipID)
	if err != nil {
		return nil, fmt.Errorf("mint sim VCEK: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:       randSerial(),
		Subject:            amdName("SEV-VCEK"),
		NotBefore:          s.ASK.NotBefore,
		NotAfter:           s.ASK.NotBefore.AddDate(7, 0, 0),
		SignatureAlgorithm: x509.SHA384WithRSAPSS,
		ExtraExtensions:    exts,
	}
	c, err := createCert(tmpl, s.ASK, &s.vcekKey.PublicKey, s.askKey)
	if err != nil {
		return nil, fmt.Errorf("mint sim VCEK: %w", err)
	}
	s.vceks[v] = c
	return c, nil
}

func vcekExtensions(tcb kds.TCBParts, hwid []byte) ([]pkix.Extension, error) {
	var exts []pkix.Extension
	add := func(id asn1.ObjectIdentifier, v any, params string) error {
		b, err := asn1.MarshalWithParams(v, params)
		if err != nil {
			return err
		}
		exts = append(exts, pkix.Extension{Id: id, Value: b})
		return nil
	}
	ints := []struct {
		id asn1.ObjectIdentifier
		v  uint8
	}{
		{kds.OidStructVersion, 0},
		{kds.OidBlSpl, tcb.BlSpl}, {kds.OidTeeSpl, tcb.TeeSpl}, {kds.OidSnpSpl, tcb.SnpSpl},
		{kds.OidSpl4, tcb.Spl4}, {kds.OidSpl5, tcb.Spl5}, {kds.OidSpl6, tcb.Spl6}, {kds.OidSpl7, tcb.Spl7},
		{kds.OidUcodeSpl, tcb.UcodeSpl},
	}
	for _, i := range ints {
		if err := add(i.id, int(i.v), ""); err != nil {
			return nil, err
		}
	}
	if err := add(kds.OidProductName1, ProductName, "ia5"); err != nil {
		return nil, err
	}
	// KDS stores the HWID as the raw 64 bytes, without an ASN.1 tag.
	exts = append(exts, pkix.Extension{Id: kds.OidHwid, Value: append([]byte(nil), hwid...)})
	return exts, nil
}

// ReportOptions are the fields of a sim report. Nil byte fields are zero;
// nil TCBs are the Signer's TCB.
type ReportOptions struct {
	// Measurement is MEASUREMENT, 48 bytes.
	Measurement []byte
	// HostData is HOST_DATA, 32 bytes.
	HostData []byte
	// ReportData is REPORT_DATA, 64 bytes (see attestation/reportdata).
	ReportData []byte
	// Policy is the guest policy; 0 means DefaultPolicy.
	Policy uint64
	// GuestSVN is GUEST_SVN.
	GuestSVN uint32
	// ReportedTCB, CommittedTCB, CurrentTCB and LaunchTCB set those fields.
	ReportedTCB, CommittedTCB, CurrentTCB, LaunchTCB *kds.TCBParts
}

// Report returns a signed 1184-byte version 3 SNP ATTESTATION_REPORT
// (SEV-SNP ABI spec 56860 table 22) with Milan CPUID, VMPL 0, VCEK signing
// key and CHIP_ID = s.ChipID, signed with ECDSA P-384/SHA-384 over bytes
// 0x0-0x29F. It fails if a byte field has the wrong length, a TCB is out of
// range, or the policy is malformed.
func (s *Signer) Report(o ReportOptions) ([]byte, error) {
	return signReport(s.vcekKey, s.ChipID, s.TCB, o)
}

// Evidence returns Report(o) followed by a certificate table (GHCB GUID table
// format) holding the VCEK for the report's REPORTED_TCB, the ASK and the ARK,
// as SNP_GET_EXT_REPORT delivers evidence.
func (s *Signer) Evidence(o ReportOptions) ([]byte, error) {
	raw, err := s.Report(o)
	if err != nil {
		return nil, err
	}
	reported := s.TCB
	if o.ReportedTCB != nil {
		reported = *o.ReportedTCB
	}
	vcek, err := s.VCEK(reported)
	if err != nil {
		return nil, err
	}
	return append(raw, certTable(vcek, s.ASK, s.ARK)...), nil
}

// Reporter returns a Reporter that signs with this chain's VCEK key at the
// default TCB, holding no ARK or ASK key: what a sim guest gets. It fails
// only if the default TCB is out of range.
func (s *Signer) Reporter() (*Reporter, error) {
	vcek, err := s.VCEK(s.TCB)
	if err != nil {
		return nil, err
	}
	return NewReporter(vcek, s.vcekKey)
}
