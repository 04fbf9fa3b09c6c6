// Package snp verifies AMD SEV-SNP evidence with go-sev-guest, keeping its
// three steps apart: parse (abi) → verify the VCEK/VLEK chain to AMD's roots
// and the report signature (verify) → validate the report's fields against
// Coffer's fixed checks (validate).
//
// The endorsement key comes from the certificate table attached to the
// evidence, else from an offline certificate directory, else from AMD KDS
// through a caching getter. A verified chain is cached per verifier, so a
// repeat attestation by the same chip at the same TCB costs one ECDSA P-384
// verification plus parsing.
package snp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cofferhq/coffer/attestation"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
)

// Config configures a Verifier. The zero value verifies against AMD's real
// roots with the VCEK taken from the evidence only, debug forbidden, no TCB
// floor.
type Config struct {
	// TrustedRoots maps a product line ("Milan", "Genoa", "Turin") to the
	// ARK/ASK(/ASVK) sets to trust. Nil means DefaultRoots(): AMD's real
	// roots. Evidence whose chain ends elsewhere fails check "trusted_root".
	TrustedRoots map[string][]*trust.AMDRootCerts
	// CertDir is an offline VCEK store laid out as Trustee's kds-store:
	// CertDir/vcek/<chip-id hex>/bl<BL>_tee<TEE>_snp<SNP>_ucode<UCODE>_vcek.der
	// (two-digit decimal SPLs), falling back to CertDir/vcek/<chip-id>/vcek.der.
	// Files may be DER or PEM. Empty: not used.
	CertDir string
	// Getter fetches VCEKs from AMD KDS when neither the evidence nor CertDir
	// has one, and the product CRL (see Revocation). It is wrapped in a CachingGetter unless it is one already, so
	// KDS sees one request per (chip, TCB). Nil: KDS is not used. See
	// KDSGetter for the real KDS.
	Getter trust.HTTPSGetter
	// MinimumTCB is the component-wise floor for the report's REPORTED_TCB
	// and COMMITTED_TCB (checks "reported_tcb", "committed_tcb").
	MinimumTCB kds.TCBParts
	// MinimumLaunchTCB is the floor for LAUNCH_TCB (check "launch_tcb");
	// nil means MinimumTCB.
	MinimumLaunchTCB *kds.TCBParts
	AllowDebug       bool
	// Revocation says whether AMD's CRL is checked (see Revocation); the
	// zero value checks it when one is available.
	Revocation Revocation
	// Product pins the product line ("Milan", "Genoa" or "Turin"); evidence
	// from another line fails check "product". Version 2 reports carry no
	// CPUID, so fetching their VCEK from KDS needs Product set. Empty: any.
	Product string
}

// Verifier verifies SNP evidence. It implements attestation.Verifier and is
// safe for concurrent use.
type Verifier struct {
	cfg    Config
	roots  map[string][]*trust.AMDRootCerts
	getter trust.HTTPSGetter
	chains *chainCache
	crls   crlCache
}

var _ attestation.Verifier = (*Verifier)(nil)

// NewVerifier checks cfg and returns a Verifier. It fails if Product is not a
// known product line, a TCB floor has a component out of range (non-ucode
// SPLs are 0-127), CertDir is not a directory, or no roots are configured.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.Revocation < RevocationIfAvailable || cfg.Revocation > RevocationOff {
		return nil, fmt.Errorf("configure SNP verifier: revocation mode %d is not one of RevocationIfAvailable, RevocationRequired, RevocationOff", cfg.Revocation)
	}
	if cfg.Product != "" {
		if _, err := kds.ParseProductLine(cfg.Product); err != nil {
			return nil, fmt.Errorf("configure SNP verifier: product %q: want %q, %q or %q", cfg.Product, Milan, Genoa, Turin)
		}
	}
	if _, err := kds.ComposeTCBParts(cfg.MinimumTCB); err != nil {
		return nil, fmt.Errorf("configure SNP verifier: minimum TCB: %w", err)
	}
	if cfg.MinimumLaunchTCB != nil {
		if _, err := kds.ComposeTCBParts(*cfg.MinimumLaunchTCB); err != nil {
			return nil, fmt.Errorf("configure SNP verifier: minimum launch TCB: %w", err)
		}
	}
	if cfg.CertDir != "" {
		st, err := os.Stat(cfg.CertDir)
		if err != nil {
			return nil, fmt.Errorf("configure SNP verifier: certificate directory: %w", err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("configure SNP verifier: certificate directory %s is not a directory", cfg.CertDir)
		}
	}
	roots := cfg.TrustedRoots
	if roots == nil {
		var err error
		if roots, err = DefaultRoots(); err != nil {
			return nil, fmt.Errorf("configure SNP verifier: %w", err)
		}
	}
	if len(roots) == 0 {
		return nil, errors.New("configure SNP verifier: TrustedRoots is empty; pass nil for AMD's roots")
	}
	v := &Verifier{cfg: cfg, roots: roots, chains: newChainCache(defaultChainCacheSize)}
	if cfg.Getter != nil {
		if cg, ok := cfg.Getter.(*CachingGetter); ok {
			v.getter = cg
		} else {
			v.getter = NewCachingGetter(cfg.Getter, 0)
		}
	}
	return v, nil
}

// TEE returns attestation.TEESNP.
func (v *Verifier) TEE() attestation.TEE { return attestation.TEESNP }

// Verify parses evidence (a raw report, optionally followed by its
// certificate table), verifies its signature and certificate chain, and
// validates it against v's configuration and opts. It returns the verified
// claims (Product is the product line), or a *attestation.CheckError naming
// the failed check: "parse", "certificates", "product", "trusted_root",
// "signature", "revocation" (CheckRevocation), "report_data", "host_data",
// "debug", "reported_tcb", "committed_tcb", "launch_tcb" or "policy"
// (other report-field checks: migration agent, CXL, VMPL, provisional
// firmware, REPORTED_TCB or CHIP_ID not those of the VCEK).
func (v *Verifier) Verify(ctx context.Context, evidence []byte, opts attestation.VerifyOptions) (*attestation.Claims, error) {
	ev, err := Parse(evidence)
	if err != nil {
		return nil, attestation.Fail(attestation.CheckParse, err)
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	ek, err := v.verifyChainAndSignature(ctx, ev, now)
	if err != nil {
		return nil, err
	}
	if err := v.validate(ev, ek, opts); err != nil {
		return nil, err
	}
	return claimsOf(ev.Report, ek.productLine), nil
}

// endorsementKey is a VCEK or VLEK that chains to a trusted root, with
// what validation needs from its extensions.
type endorsementKey struct {
	der         []byte
	cert        *x509.Certificate
	signer      abi.ReportSigner
	productLine string
	info        *ekInfo
	// crlNextUpdate is the NextUpdate of the CRL checked with this key;
	// zero if none was.
	crlNextUpdate time.Time
}

func (v *Verifier) verifyChainAndSignature(ctx context.Context, ev *Evidence, now time.Time) (*endorsementKey, error) {
	info, err := abi.ParseSignerInfo(ev.Report.GetSignerInfo())
	if err != nil {
		return nil, attestation.Fail(attestation.CheckParse, fmt.Errorf("decode SIGNER_INFO: %w", err))
	}
	if info.SigningKey != abi.VcekReportSigner && info.SigningKey != abi.VlekReportSigner {
		return nil, attestation.Fail(attestation.CheckCertificates,
			fmt.Errorf("report's SIGNING_KEY is %v; only VCEK- and VLEK-signed reports can be verified", info.SigningKey))
	}
	hint, err := v.productHint(ev.Report)
	if err != nil {
		return nil, attestation.Fail(attestation.CheckProduct, err)
	}
	der, err := v.endorsementKeyDER(ctx, ev, info.SigningKey, hint)
	if err != nil {
		return nil, attestation.Fail(attestation.CheckCertificates, err)
	}
	if ek, ok := v.chains.get(der, info.SigningKey, now); ok {
		if err := verify.SnpReportSignature(ev.Raw, ek.cert); err != nil {
			return nil, attestation.Fail(attestation.CheckSignature, err)
		}
		return ek, nil
	}

	cert, err := trust.ParseCert(der)
	if err != nil {
		return nil, attestation.Fail(attestation.CheckCertificates, fmt.Errorf("parse %v certificate: %w", info.SigningKey, err))
	}
	line, err := v.productLine(ev.Report, hint, cert, info.SigningKey)
	if err != nil {
		return nil, attestation.Fail(attestation.CheckProduct, err)
	}
	root, err := v.chainRoot(line, cert, info.SigningKey, now)
	if err != nil {
		return nil, attestation.Fail(attestation.CheckTrustedRoot, err)
	}
	if err := verify.SnpReportSignature(ev.Raw, cert); err != nil {
		return nil, attestation.Fail(attestation.CheckSignature, err)
	}
	if err := v.checkProfile(ctx, ev, der, cert, info.SigningKey, line, now); err != nil {
		return nil, attestation.Fail(attestation.CheckCertificates, err)
	}
	eki, err := readEKInfo(cert, info.SigningKey, line)
	if err != nil {
		return nil, attestation.Fail(attestation.CheckCertificates, err)
	}
	ek := &endorsementKey{der: der, cert: cert, signer: info.SigningKey, productLine: line, info: eki}
	if err := v.checkRevocation(ctx, line, ek, root, now); err != nil {
		return nil, err
	}
	v.chains.put(ek, root)
	return ek, nil
}

// checkProfile checks the endorsement key certificate against AMD's KDS
// certificate profile. Milan and Genoa use go-sev-guest's full
// verification (version, RSASSA-PSS, P-384, AMD subject/issuer names,
// extensions, chain and signature again). go-sev-guest v0.15 rejects Turin
// VCEKs (FMC SPL extension, 8-byte hwID), so for Turin the chain and the
// report signature, already verified, are complemented by the key and
// signature algorithm checks here and the extension parsing of readEKInfo.
func (v *Verifier) checkProfile(ctx context.Context, ev *Evidence, der []byte, cert *x509.Certificate, signer abi.ReportSigner, line string, now time.Time) error {
	if line == Turin {
		if cert.SignatureAlgorithm != x509.SHA384WithRSAPSS {
			return fmt.Errorf("%v certificate is signed with %v: AMD signs with RSASSA-PSS SHA-384", signer, cert.SignatureAlgorithm)
		}
		if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P384() {
			return fmt.Errorf("%v certificate key is %T: want ECDSA P-384", signer, cert.PublicKey)
		}
		return nil
	}
	product, _ := kds.ParseProductLine(line)
	att := &spb.Attestation{Report: ev.Report, CertificateChain: &spb.CertificateChain{}}
	if signer == abi.VlekReportSigner {
		att.CertificateChain.VlekCert = der
	} else {
		att.CertificateChain.VcekCert = der
	}
	vopts := &verify.Options{
		DisableCertFetching: true,
		Now:                 now,
		TrustedRoots:        map[string][]*trust.AMDRootCerts{line: v.roots[line]},
		Product:             product,
	}
	if err := verify.SnpAttestationContext(ctx, att, vopts); err != nil {
		return fmt.Errorf("verify %v certificate: %w", signer, err)
	}
	return nil
}

// productHint returns the product line known before the VCEK is at hand:
// from a v3+ report's CPUID, else Config.Product, else "".
func (v *Verifier) productHint(r *spb.Report) (string, error) {
	if fms := r.GetCpuid1EaxFms(); fms != 0 {
		line := kds.ProductLineFromFms(fms)
		if line == "Unknown" {
			f, m, s := abi.FmsFromCpuid1Eax(fms)
			return "", fmt.Errorf("report's CPUID family 0x%x model 0x%x stepping 0x%x is not an SEV-SNP product go-sev-guest knows (Milan, Genoa, Turin)", f, m, s)
		}
		if v.cfg.Product != "" && line != v.cfg.Product {
			return "", fmt.Errorf("report is from a %s processor, but the verifier is configured for %s", line, v.cfg.Product)
		}
		return line, nil
	}
	return v.cfg.Product, nil
}

// productLine settles the product line once the endorsement key is parsed:
// a v3+ report's CPUID wins; otherwise the certificate's productName
// extension, which must match Config.Product when that is set.
func (v *Verifier) productLine(r *spb.Report, hint string, cert *x509.Certificate, signer abi.ReportSigner) (string, error) {
	if r.GetCpuid1EaxFms() != 0 {
		return hint, nil
	}
	exts, err := kds.CertificateExtensions(cert, signer)
	if err != nil {
		return "", fmt.Errorf("read %v certificate extensions: %w", signer, err)
	}
	p, err := kds.ParseProductName(exts.ProductName, signer)
	if err != nil {
		return "", fmt.Errorf("%v certificate product name: %w", signer, err)
	}
	line := kds.ProductLine(p)
	if v.cfg.Product != "" && line != v.cfg.Product {
		return "", fmt.Errorf("%v certificate is for product %q (line %s), but the verifier is configured for %s", signer, exts.ProductName, line, v.cfg.Product)
	}
	return line, nil
}

// chainRoot checks that cert chains to one of the trusted roots of line at
// now and returns that root.
func (v *Verifier) chainRoot(line string, cert *x509.Certificate, signer abi.ReportSigner, now time.Time) (*trust.AMDRootCerts, error) {
	roots := v.roots[line]
	if len(roots) == 0 {
		return nil, fmt.Errorf("no trusted roots are configured for product line %s (configured: %s)", line, strings.Join(rootLines(v.roots), ", "))
	}
	var errs []error
	for _, r := range roots {
		opts := r.X509Options(now, signer)
		if opts == nil {
			errs = append(errs, fmt.Errorf("root %s has no intermediate for %v", describeRoot(r), signer))
			continue
		}
		if _, err := cert.Verify(*opts); err != nil {
			errs = append(errs, fmt.Errorf("root %s: %w", describeRoot(r), err))
			continue
		}
		return r, nil
	}
	return nil, fmt.Errorf("%v certificate (issuer %q, serial %s) does not chain to a trusted %s root at %s: %w (evidence from Coffer's simulated TEE verifies only against its sim root, real hardware evidence only against AMD's roots)",
		signer, cert.Issuer.String(), cert.SerialNumber, line, now.UTC().Format(time.RFC3339), errors.Join(errs...))
}

func describeRoot(r *trust.AMDRootCerts) string {
	if r.ProductCerts == nil || r.ProductCerts.Ark == nil {
		return "(no ARK)"
	}
	return fmt.Sprintf("%q", r.ProductCerts.Ark.Subject.CommonName)
}

func rootLines(m map[string][]*trust.AMDRootCerts) []string {
	var lines []string
	for k := range m {
		lines = append(lines, k)
	}
	sort.Strings(lines)
	return lines
}

// endorsementKeyDER finds the VCEK/VLEK: evidence table, CertDir, KDS.
func (v *Verifier) endorsementKeyDER(ctx context.Context, ev *Evidence, signer abi.ReportSigner, productLine string) ([]byte, error) {
	guid := abi.VcekGUID
	if signer == abi.VlekReportSigner {
		guid = abi.VlekGUID
	}
	if der := ev.certByGUID(guid); der != nil {
		return der, nil
	}
	if signer == abi.VlekReportSigner {
		return nil, fmt.Errorf("report is signed by a VLEK but the evidence's certificate table has none; the host must attach the VLEK (KDS cannot serve it)")
	}
	chipID := ev.Report.GetChipId()
	tcb := ev.Report.GetReportedTcb()
	var tried []string
	if v.cfg.CertDir != "" {
		der, paths, err := readCertDir(v.cfg.CertDir, productLine, chipID, tcb)
		if err != nil {
			return nil, err
		}
		if der != nil {
			return der, nil
		}
		tried = append(tried, paths...)
	}
	if v.getter == nil {
		where := "the evidence's certificate table"
		if len(tried) > 0 {
			where += ", " + strings.Join(tried, ", ")
		}
		return nil, fmt.Errorf("no VCEK found in %s, and fetching from AMD KDS is not configured: attach the VCEK to the evidence, pass it explicitly, or add it to the certificate directory", where)
	}
	if allZero(chipID) {
		return nil, errors.New("report's CHIP_ID is masked (all zero), so its VCEK cannot be fetched from KDS: attach the VCEK to the evidence")
	}
	if productLine == "" {
		return nil, errors.New("report version 2 has no CPUID, so the KDS product line is unknown: set the verifier's Product (Milan, Genoa or Turin) or attach the VCEK")
	}
	url, err := VCEKURL(productLine, chipID, tcb)
	if err != nil {
		return nil, err
	}
	der, err := trust.GetWith(ctx, v.getter, url)
	if err != nil {
		return nil, fmt.Errorf("fetch VCEK from AMD KDS %s: %w", url, err)
	}
	return der, nil
}

// TCBFileName returns the Trustee kds-store file name prefix for a
// REPORTED_TCB of productLine, e.g. "bl02_tee00_snp06_ucode21", with an
// "fmcNN_" prefix on Turin.
func TCBFileName(productLine string, tcb uint64) string {
	t := DecodeTCB(productLine, tcb)
	name := fmt.Sprintf("bl%02d_tee%02d_snp%02d_ucode%02d", t.Bootloader, t.TEE, t.SNP, t.Microcode)
	if productLine == Turin {
		name = fmt.Sprintf("fmc%02d_", t.FMC) + name
	}
	return name
}

func readCertDir(dir, productLine string, chipID []byte, tcb uint64) ([]byte, []string, error) {
	hw := fmt.Sprintf("%x", chipID)
	paths := []string{
		filepath.Join(dir, "vcek", hw, TCBFileName(productLine, tcb)+"_vcek.der"),
		filepath.Join(dir, "vcek", hw, "vcek.der"),
	}
	if productLine == Turin {
		// Turin VCEKs are named by the 8-byte hardware ID.
		short := kdsHWID(Turin, chipID)
		paths = append(paths,
			filepath.Join(dir, "vcek", short, TCBFileName(productLine, tcb)+"_vcek.der"),
			filepath.Join(dir, "vcek", short, "vcek.der"))
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, paths, fmt.Errorf("read VCEK: %w", err)
		}
		cert, err := trust.ParseCert(b)
		if err != nil {
			return nil, paths, fmt.Errorf("parse VCEK %s: %w", p, err)
		}
		return cert.Raw, paths, nil
	}
	return nil, paths, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// chainKey identifies a verified endorsement key certificate.
func chainKey(der []byte, signer abi.ReportSigner) [33]byte {
	var k [33]byte
	h := sha256.Sum256(der)
	copy(k[:32], h[:])
	k[32] = byte(signer)
	return k
}
