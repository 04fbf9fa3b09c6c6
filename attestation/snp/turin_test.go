package snp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
)

func TestTCBLayouts(t *testing.T) {
	// Turin: FMC, BL, TEE, SNP in bytes 0-3, microcode in byte 7.
	turin := TCB{FMC: 1, Bootloader: 2, TEE: 3, SNP: 4, Microcode: 82}
	v := EncodeTCB(Turin, turin)
	require.Equal(t, uint64(0x5200000004030201), v)
	require.Equal(t, turin, DecodeTCB(Turin, v))
	// Milan/Genoa: BL, TEE in bytes 0-1, SNP in byte 6, microcode in 7.
	milan := TCB{Bootloader: 4, TEE: 0, SNP: 22, Microcode: 213}
	require.Equal(t, uint64(0xd516000000000004), EncodeTCB(Milan, milan))
	require.Equal(t, milan, DecodeTCB(Genoa, 0xd516000000000004))
	// The same 64 bits read in the other layout give other levels: the
	// reason a Turin report must not go through the Milan decoding.
	require.NotEqual(t, turin, DecodeTCB(Milan, v))

	chipID := append([]byte{0x6b, 0xb1, 0x22, 0x9b, 0x76, 0x92, 0xb7, 0x10}, make([]byte, 56)...)
	url, err := VCEKURL(Turin, chipID, EncodeTCB(Turin, TCB{FMC: 1, Bootloader: 1, TEE: 1, SNP: 4, Microcode: 82}))
	require.NoError(t, err)
	require.Equal(t, "https://kdsintf.amd.com/vcek/v1/Turin/6bb1229b7692b710?blSPL=1&teeSPL=1&snpSPL=4&ucodeSPL=82&fmcSPL=1", url)
	url, err = VCEKURL(Milan, testChipID(), 0xd516000000000004)
	require.NoError(t, err)
	require.Contains(t, url, "/vcek/v1/Milan/c0c1c2")
	require.Contains(t, url, "?blSPL=4&teeSPL=0&snpSPL=22&ucodeSPL=213")
	_, err = VCEKURL("sim", chipID, 0)
	require.EqualError(t, err, `product line "sim" has no AMD KDS VCEK endpoint: want Milan, Genoa or Turin`)
	require.Equal(t, "fmc01_bl02_tee03_snp04_ucode82", TCBFileName(Turin, v))

	require.True(t, chipIDMatches(chipID, chipID[:8]))
	require.False(t, chipIDMatches(append(chipID[:8:8], filled(56, 1)...), chipID[:8]))
}

// testPKI is a hand-made AMD-shaped chain: RSA ARK → ASK (RSASSA-PSS
// SHA-384, as AMD signs) → ECDSA P-384 VCEK, for a product line
// go-sev-guest's fakes do not cover (Turin) and for CRLs.
type testPKI struct {
	line           string
	ark, ask, vcek *x509.Certificate
	arkKey, askKey *rsa.PrivateKey
	vcekKey        *ecdsa.PrivateKey
	chipID         []byte
	tcb            TCB
	roots          map[string][]*trust.AMDRootCerts
	notBefore      time.Time
	vcekSerial     *big.Int
}

func newTestPKI(t *testing.T, line string, tcb TCB) *testPKI {
	t.Helper()
	p := &testPKI{line: line, tcb: tcb, notBefore: testNow.Add(-24 * time.Hour), vcekSerial: big.NewInt(77)}
	var err error
	p.arkKey, err = rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	p.askKey, err = rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	p.vcekKey, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	require.NoError(t, err)
	name := func(cn string) pkix.Name {
		return pkix.Name{CommonName: cn, OrganizationalUnit: []string{"Engineering"}, Organization: []string{"Advanced Micro Devices"},
			Locality: []string{"Santa Clara"}, Province: []string{"CA"}, Country: []string{"US"}}
	}
	ca := func(serial int64, cn string) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: name(cn), NotBefore: p.notBefore, NotAfter: p.notBefore.AddDate(25, 0, 0),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, SignatureAlgorithm: x509.SHA384WithRSAPSS}
	}
	mk := func(tmpl, parent *x509.Certificate, pub any, priv *rsa.PrivateKey) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
		require.NoError(t, err)
		c, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		return c
	}
	arkT := ca(1, "ARK-"+line)
	p.ark = mk(arkT, arkT, &p.arkKey.PublicKey, p.arkKey)
	p.ask = mk(ca(2, "SEV-"+line), p.ark, &p.askKey.PublicKey, p.arkKey)
	p.chipID = append(filled(8, 0xab), make([]byte, 56)...)
	var exts []pkix.Extension
	addInt := func(id asn1.ObjectIdentifier, v uint8) {
		b, err := asn1.Marshal(int(v))
		require.NoError(t, err)
		exts = append(exts, pkix.Extension{Id: id, Value: b})
	}
	addInt(kds.OidStructVersion, 1)
	addInt(OidFmcSpl, tcb.FMC)
	addInt(kds.OidBlSpl, tcb.Bootloader)
	addInt(kds.OidTeeSpl, tcb.TEE)
	addInt(kds.OidSnpSpl, tcb.SNP)
	addInt(kds.OidUcodeSpl, tcb.Microcode)
	pn, _ := asn1.MarshalWithParams(line+"-B0", "ia5")
	exts = append(exts, pkix.Extension{Id: kds.OidProductName1, Value: pn},
		pkix.Extension{Id: kds.OidHwid, Value: p.chipID[:8]}) // Turin: the 8-byte hwID
	p.vcek = mk(&x509.Certificate{SerialNumber: p.vcekSerial, Subject: name("SEV-VCEK"), NotBefore: p.notBefore, NotAfter: p.notBefore.AddDate(7, 0, 0),
		SignatureAlgorithm: x509.SHA384WithRSAPSS, ExtraExtensions: exts}, p.ask, &p.vcekKey.PublicKey, p.askKey)
	roots, err := RootsFromPEM(line, EncodeBundle(p.ask, p.ark))
	require.NoError(t, err)
	p.roots = map[string][]*trust.AMDRootCerts{line: roots}
	return p
}

// evidence returns a signed version 3 Turin report (CPUID family 1Ah)
// followed by a certificate table holding the VCEK.
func (p *testPKI) evidence(t *testing.T, reportData []byte, reported TCB) []byte {
	t.Helper()
	tcb := EncodeTCB(Turin, p.tcb)
	r := &spb.Report{
		Version: 3, Policy: basePolicy, SignatureAlgo: abi.SignEcdsaP384Sha384, Cpuid1EaxFms: 0x00b00f21,
		ReportData: reportData, Measurement: filled(48, 0x3e), HostData: make([]byte, 32), FamilyId: make([]byte, 16), ImageId: make([]byte, 16),
		IdKeyDigest: make([]byte, 48), AuthorKeyDigest: make([]byte, 48), ReportId: make([]byte, 32), ReportIdMa: make([]byte, 32),
		ChipId: p.chipID, SignerInfo: abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.VcekReportSigner}),
		ReportedTcb: EncodeTCB(Turin, reported), CommittedTcb: tcb, CurrentTcb: tcb, LaunchTcb: tcb,
		CurrentMajor: 1, CurrentMinor: 58, CommittedMajor: 1, CommittedMinor: 58, Signature: make([]byte, abi.SignatureSize),
	}
	raw, err := abi.ReportToAbiBytes(r)
	require.NoError(t, err)
	d := sha512.Sum384(abi.SignedComponent(raw))
	sr, ss, err := ecdsa.Sign(rand.Reader, p.vcekKey, d[:])
	require.NoError(t, err)
	require.NoError(t, abi.SetSignature(sr, ss, raw))
	table := &abi.CertTable{Entries: []abi.CertTableEntry{{GUID: uuid.MustParse(abi.VcekGUID), RawCert: p.vcek.Raw}}}
	return append(raw, table.Marshal()...)
}

// crl returns a CRL signed by the ARK revoking serials, valid from
// testNow - 1h to nextUpdate.
func (p *testPKI) crl(t *testing.T, nextUpdate time.Time, serials ...*big.Int) []byte {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: testNow.Add(-2 * time.Hour)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: testNow.Add(-time.Hour), NextUpdate: nextUpdate,
		RevokedCertificateEntries: entries, SignatureAlgorithm: x509.SHA384WithRSAPSS,
	}, p.ark, p.arkKey)
	require.NoError(t, err)
	return der
}

func TestTurinEvidence(t *testing.T) {
	tcb := TCB{FMC: 1, Bootloader: 2, TEE: 3, SNP: 4, Microcode: 82}
	p := newTestPKI(t, Turin, tcb)
	v, err := NewVerifier(Config{TrustedRoots: p.roots, MinimumTCB: kds.TCBParts{BlSpl: 2, TeeSpl: 3, SnpSpl: 4, UcodeSpl: 80}, Revocation: RevocationOff})
	require.NoError(t, err)
	opts := attestation.VerifyOptions{ReportData: wantReportData(), Now: testNow}
	claims, err := v.Verify(context.Background(), p.evidence(t, wantReportData(), tcb), opts)
	require.NoError(t, err)
	require.Equal(t, Turin, claims.Product)
	require.Equal(t, EncodeTCB(Turin, tcb), claims.ReportedTCB)

	// The floor applies to the Turin-decoded levels: SNP 4 < 5 fails.
	strict, err := NewVerifier(Config{TrustedRoots: p.roots, MinimumTCB: kds.TCBParts{SnpSpl: 5}, Revocation: RevocationOff})
	require.NoError(t, err)
	_, err = strict.Verify(context.Background(), p.evidence(t, wantReportData(), tcb), opts)
	require.Equal(t, attestation.CheckReportedTCB, attestation.FailedCheck(err))
	require.ErrorContains(t, err, "report's REPORTED_TCB 0x5200000004030201 (fmc 1 bl 2 tee 3 snp 4 ucode 82) is below the minimum")

	// A report claiming another FMC level than its VCEK certifies fails.
	other := tcb
	other.FMC = 2
	_, err = v.Verify(context.Background(), p.evidence(t, wantReportData(), other), opts)
	require.Equal(t, attestation.CheckPolicy, attestation.FailedCheck(err))
	require.ErrorContains(t, err, "is not the TCB its VCEK is certified for (0x5200000004030201 (fmc 1 bl 2 tee 3 snp 4 ucode 82))")
}

func TestRevocation(t *testing.T) {
	tcb := TCB{FMC: 1, Bootloader: 2, TEE: 3, SNP: 4, Microcode: 82}
	p := newTestPKI(t, Turin, tcb)
	ev := p.evidence(t, wantReportData(), tcb)
	opts := attestation.VerifyOptions{ReportData: wantReportData(), Now: testNow}
	verify := func(cfg Config) error {
		cfg.TrustedRoots = p.roots
		v, err := NewVerifier(cfg)
		require.NoError(t, err)
		_, err = v.Verify(context.Background(), ev, opts)
		return err
	}
	writeCRL := func(der []byte) string {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "crl.der"), der, 0o644))
		return dir
	}

	// No CRL anywhere: passes by default, fails when required.
	require.NoError(t, verify(Config{}))
	err := verify(Config{Revocation: RevocationRequired})
	require.Equal(t, CheckRevocation, attestation.FailedCheck(err))
	require.ErrorContains(t, err, "no Turin CRL is available")

	// A current CRL revoking nothing passes, even when required.
	require.NoError(t, verify(Config{CertDir: writeCRL(p.crl(t, testNow.Add(24*time.Hour))), Revocation: RevocationRequired}))

	// The VCEK revoked, or the ASK: refused by default.
	err = verify(Config{CertDir: writeCRL(p.crl(t, testNow.Add(24*time.Hour), p.vcekSerial))})
	require.Equal(t, CheckRevocation, attestation.FailedCheck(err))
	require.ErrorContains(t, err, `revokes certificate "SEV-VCEK" serial 77`)
	err = verify(Config{CertDir: writeCRL(p.crl(t, testNow.Add(24*time.Hour), p.ask.SerialNumber))})
	require.ErrorContains(t, err, `revokes certificate "SEV-Turin" serial 2`)

	// Off: not consulted.
	require.NoError(t, verify(Config{CertDir: writeCRL(p.crl(t, testNow.Add(24*time.Hour), p.vcekSerial)), Revocation: RevocationOff}))

	// An expired CRL is no CRL: passes by default, fails when required.
	expired := writeCRL(p.crl(t, testNow.Add(-time.Minute)))
	require.NoError(t, verify(Config{CertDir: expired}))
	err = verify(Config{CertDir: expired, Revocation: RevocationRequired})
	require.Equal(t, CheckRevocation, attestation.FailedCheck(err))
	require.ErrorContains(t, err, "CRL expired at")

	// A CRL not signed by the ARK is refused.
	other := newTestPKI(t, Turin, tcb)
	err = verify(Config{CertDir: writeCRL(other.crl(t, testNow.Add(24*time.Hour))), Revocation: RevocationRequired})
	require.ErrorContains(t, err, "CRL is not signed by the ARK")

	// From KDS through the caching getter: fetched once per verifier and
	// cached until its nextUpdate.
	url := kds.CrlLinkByKey(Turin, abi.VcekReportSigner)
	fake := &countingKDS{url: url, der: p.crl(t, testNow.Add(24*time.Hour), p.vcekSerial)}
	err = verify(Config{Getter: fake})
	require.Equal(t, CheckRevocation, attestation.FailedCheck(err))
	require.EqualValues(t, 1, fake.urlCalls.Load())

	_, err = NewVerifier(Config{Revocation: Revocation(7)})
	require.ErrorContains(t, err, "revocation mode 7 is not one of")
}

// TestRevocationCacheExpiry: a verified chain is re-checked once the CRL
// it was checked against reaches its nextUpdate.
func TestRevocationCacheExpiry(t *testing.T) {
	tcb := TCB{FMC: 1, Bootloader: 2, TEE: 3, SNP: 4, Microcode: 82}
	p := newTestPKI(t, Turin, tcb)
	ev := p.evidence(t, wantReportData(), tcb)
	var calls atomic.Int32
	var serve atomic.Value
	serve.Store(p.crl(t, testNow.Add(time.Hour)))
	getter := getterFunc(func(string) ([]byte, error) { calls.Add(1); return serve.Load().([]byte), nil })
	v, err := NewVerifier(Config{TrustedRoots: p.roots, Getter: getter, Revocation: RevocationRequired})
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), ev, attestation.VerifyOptions{ReportData: wantReportData(), Now: testNow})
	require.NoError(t, err)
	_, err = v.Verify(context.Background(), ev, attestation.VerifyOptions{ReportData: wantReportData(), Now: testNow.Add(30 * time.Minute)})
	require.NoError(t, err)
	require.EqualValues(t, 1, calls.Load(), "cached until nextUpdate")

	// Past nextUpdate the AMD CRL now revokes the VCEK.
	serve.Store(p.crl(t, testNow.Add(48*time.Hour), p.vcekSerial))
	_, err = v.Verify(context.Background(), ev, attestation.VerifyOptions{ReportData: wantReportData(), Now: testNow.Add(2 * time.Hour)})
	require.Equal(t, CheckRevocation, attestation.FailedCheck(err), "err: %v calls %d", err, calls.Load())
}

type getterFunc func(string) ([]byte, error)

func (f getterFunc) Get(url string) ([]byte, error) { return f(url) }
