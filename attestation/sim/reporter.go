package sim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"path/filepath"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/uuid"
)

// Reporter signs sim reports with a VCEK key alone: it holds the VCEK
// certificate and its ECDSA P-384 private key but no ARK or ASK key, so it
// can produce evidence for its chain yet mint nothing. It is what a sim
// guest receives (see FWCfgIdentity). Its reports are byte-for-byte the
// format of Signer.Report. Safe for concurrent use.
type Reporter struct {
	// VCEK is the certificate of the signing key, issued by the chain's ASK.
	VCEK *x509.Certificate
	// ChipID is the 64-byte CHIP_ID, read from the VCEK's HWID extension.
	ChipID []byte
	// TCB is the VCEK's TCB, which every report claims as its TCBs unless
	// ReportOptions override them.
	TCB kds.TCBParts

	key *ecdsa.PrivateKey
}

// NewReporter returns a Reporter for vcek and its private key. It fails if
// key is not a P-384 key matching vcek, or vcek lacks the KDS extensions
// (HWID, TCB SPLs) of a VCEK.
func NewReporter(vcek *x509.Certificate, key *ecdsa.PrivateKey) (*Reporter, error) {
	if key == nil || key.Curve != elliptic.P384() {
		return nil, fmt.Errorf("sim reporter: VCEK key must be ECDSA P-384")
	}
	if !key.PublicKey.Equal(vcek.PublicKey) {
		return nil, fmt.Errorf("sim reporter: VCEK private key does not match the VCEK certificate (serial %s): use the key and certificate of one chain", vcek.SerialNumber)
	}
	exts, err := kds.VcekCertificateExtensions(vcek)
	if err != nil {
		return nil, fmt.Errorf("sim reporter: VCEK extensions: %w", err)
	}
	if len(exts.HWID) != abi.ChipIDSize {
		return nil, fmt.Errorf("sim reporter: VCEK HWID is %d bytes, want %d", len(exts.HWID), abi.ChipIDSize)
	}
	return &Reporter{VCEK: vcek, ChipID: exts.HWID, TCB: kds.DecomposeTCBVersion(exts.TCBVersion), key: key}, nil
}

// LoadReporter reads the VCEK (vcek.pem) and its key (vcek.key) from a
// chain directory written by Signer.WriteDir; it needs neither the ARK nor
// the ASK key. It fails if a file is missing or malformed, or the key does
// not match.
func LoadReporter(dir string) (*Reporter, error) {
	certDER, err := readPEM(filepath.Join(dir, VCEKFile), "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	keyDER, err := readPEM(filepath.Join(dir, vcekKeyFile), "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	r, err := parseReporter(certDER, keyDER)
	if err != nil {
		return nil, fmt.Errorf("load sim chain %s: %w", dir, err)
	}
	return r, nil
}

// MarshalPEM encodes the Reporter as PEM: the VCEK "CERTIFICATE" block, then
// its PKCS #8 "PRIVATE KEY" block. This is the FWCfgIdentity blob, about
// 2 KiB. It holds a private key: write it with mode 0600.
func (r *Reporter) MarshalPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(r.key)
	if err != nil {
		return nil, fmt.Errorf("encode sim VCEK key: %w", err)
	}
	out := certPEM(r.VCEK)
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...), nil
}

// ParseReporterPEM decodes MarshalPEM's output. It fails unless b holds
// exactly one CERTIFICATE and one PRIVATE KEY block that NewReporter
// accepts.
func ParseReporterPEM(b []byte) (*Reporter, error) {
	var certDER, keyDER []byte
	for rest := bytes.TrimSpace(b); len(rest) > 0; rest = bytes.TrimSpace(rest) {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, fmt.Errorf("parse sim identity: trailing data that is not PEM: want a VCEK CERTIFICATE and a PRIVATE KEY block")
		}
		switch {
		case blk.Type == "CERTIFICATE" && certDER == nil:
			certDER = blk.Bytes
		case blk.Type == "PRIVATE KEY" && keyDER == nil:
			keyDER = blk.Bytes
		default:
			return nil, fmt.Errorf("parse sim identity: unexpected or repeated PEM block %q: want one CERTIFICATE and one PRIVATE KEY", blk.Type)
		}
	}
	if certDER == nil || keyDER == nil {
		return nil, fmt.Errorf("parse sim identity: want a VCEK CERTIFICATE and a PRIVATE KEY block, found certificate=%t key=%t", certDER != nil, keyDER != nil)
	}
	r, err := parseReporter(certDER, keyDER)
	if err != nil {
		return nil, fmt.Errorf("parse sim identity: %w", err)
	}
	return r, nil
}

// WriteIdentity writes MarshalPEM's output to path with mode 0600,
// atomically (temporary file, then rename).
func (r *Reporter) WriteIdentity(path string) error {
	b, err := r.MarshalPEM()
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b, 0o600)
}

func parseReporter(certDER, keyDER []byte) (*Reporter, error) {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("parse VCEK certificate: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("parse VCEK key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("VCEK key is %T: %w: want ECDSA P-384", k, errNoKeys)
	}
	return NewReporter(cert, key)
}

// Report returns a signed 1184-byte version 3 SNP report exactly as
// Signer.Report does, with CHIP_ID r.ChipID and default TCBs r.TCB.
func (r *Reporter) Report(o ReportOptions) ([]byte, error) {
	return signReport(r.key, r.ChipID, r.TCB, o)
}

// Evidence returns Report(o) followed by a certificate table holding only
// the VCEK; a verifier supplies the ASK and ARK from its configured sim
// root. It fails if o.ReportedTCB differs from the VCEK's TCB, since the
// VCEK would then not match the report.
func (r *Reporter) Evidence(o ReportOptions) ([]byte, error) {
	if o.ReportedTCB != nil && *o.ReportedTCB != r.TCB {
		return nil, fmt.Errorf("sign sim evidence: REPORTED_TCB %+v differs from the VCEK's TCB %+v: a Reporter has one VCEK; use Signer.Evidence for other TCBs", *o.ReportedTCB, r.TCB)
	}
	raw, err := r.Report(o)
	if err != nil {
		return nil, err
	}
	return append(raw, certTable(r.VCEK)...), nil
}

// certTable returns the GHCB GUID certificate table (as SNP_GET_EXT_REPORT
// returns it) for vcek and optionally the ASK and ARK, in that order.
func certTable(vcek *x509.Certificate, askArk ...*x509.Certificate) []byte {
	guids := []string{abi.VcekGUID, abi.AskGUID, abi.ArkGUID}
	certs := append([]*x509.Certificate{vcek}, askArk...)
	table := &abi.CertTable{}
	for i, c := range certs {
		table.Entries = append(table.Entries, abi.CertTableEntry{GUID: uuid.MustParse(guids[i]), RawCert: c.Raw})
	}
	return table.Marshal()
}

// signReport builds and signs a sim report; see Signer.Report. defTCB fills
// nil TCBs in o.
func signReport(key *ecdsa.PrivateKey, chipID []byte, defTCB kds.TCBParts, o ReportOptions) ([]byte, error) {
	field := func(name string, b []byte, size int) ([]byte, error) {
		if b == nil {
			return make([]byte, size), nil
		}
		if len(b) != size {
			return nil, fmt.Errorf("sign sim report: %s is %d bytes, want %d", name, len(b), size)
		}
		return b, nil
	}
	meas, err := field("MEASUREMENT", o.Measurement, abi.MeasurementSize)
	if err != nil {
		return nil, err
	}
	host, err := field("HOST_DATA", o.HostData, abi.HostDataSize)
	if err != nil {
		return nil, err
	}
	rd, err := field("REPORT_DATA", o.ReportData, abi.ReportDataSize)
	if err != nil {
		return nil, err
	}
	tcb := func(p *kds.TCBParts) (uint64, error) {
		if p == nil {
			p = &defTCB
		}
		v, err := kds.ComposeTCBParts(*p)
		return uint64(v), err
	}
	var tcbs [4]uint64
	for i, p := range []*kds.TCBParts{o.ReportedTCB, o.CommittedTCB, o.CurrentTCB, o.LaunchTCB} {
		if tcbs[i], err = tcb(p); err != nil {
			return nil, fmt.Errorf("sign sim report: %w", err)
		}
	}
	policy := o.Policy
	if policy == 0 {
		policy = DefaultPolicy
	}
	rep := &spb.Report{
		Version:         abi.ReportVersion3,
		GuestSvn:        o.GuestSVN,
		Policy:          policy,
		SignatureAlgo:   abi.SignEcdsaP384Sha384,
		PlatformInfo:    1, // SMT enabled
		SignerInfo:      abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.VcekReportSigner}),
		ReportData:      rd,
		Measurement:     meas,
		HostData:        host,
		FamilyId:        make([]byte, abi.FamilyIDSize),
		ImageId:         make([]byte, abi.ImageIDSize),
		IdKeyDigest:     make([]byte, abi.IDKeyDigestSize),
		AuthorKeyDigest: make([]byte, abi.AuthorKeyDigestSize),
		ReportId:        make([]byte, abi.ReportIDSize),
		ReportIdMa:      make([]byte, abi.ReportIDMASize),
		ChipId:          chipID,
		ReportedTcb:     tcbs[0],
		CommittedTcb:    tcbs[1],
		CurrentTcb:      tcbs[2],
		LaunchTcb:       tcbs[3],
		Cpuid1EaxFms:    abi.FmsToCpuid1Eax(0x19, 0x01, 0x01), // Milan B1
		Signature:       make([]byte, abi.SignatureSize),
	}
	raw, err := abi.ReportToAbiBytes(rep)
	if err != nil {
		return nil, fmt.Errorf("sign sim report: %w", err)
	}
	if _, err := abi.ReportToProto(raw); err != nil {
		return nil, fmt.Errorf("sign sim report: %w", err)
	}
	digest := sha512.Sum384(abi.SignedComponent(raw))
	rr, ss, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("sign sim report: %w", err)
	}
	if err := abi.SetSignature(rr, ss, raw); err != nil {
		return nil, fmt.Errorf("sign sim report: %w", err)
	}
	return raw, nil
}
