// Package snptest is a test-only fake AMD SEV-SNP machine, shared by the
// tests and benchmarks of attestation/snp and the KBS: go-sev-guest's
// test-only ARK→ASK→VCEK chain (github.com/google/go-sev-guest/testing,
// default test keys) signing version 2 reports (SEV-SNP ABI spec, Table 23)
// that verify end to end with attestation/snp when its TrustedRoots are
// Roots(). Never use it outside tests.
package snptest

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	test "github.com/google/go-sev-guest/testing"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/cofferhq/coffer/attestation"
)

// Now is the time tests verify at; the chain is created an hour before.
var Now = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

// GoodTCB is the VCEK's TCB and every report TCB by default.
var GoodTCB = kds.TCBParts{BlSpl: 4, TeeSpl: 0, SnpSpl: 22, UcodeSpl: 213}

// Guest policies: SMT allowed (bit 16), reserved bit 17; Debug adds bit 19.
const (
	Policy      = 0x30000
	DebugPolicy = Policy | 1<<19
)

// Chip is one fake machine.
type Chip struct {
	signer *test.AmdSigner
	tcb    kds.TCBParts
	table  []byte
}

// ChipID is the fake chip's CHIP_ID (64 bytes).
func ChipID() []byte {
	id := make([]byte, abi.ChipIDSize)
	for i := range id {
		id[i] = byte(0xc0 + i)
	}
	return id
}

var (
	defaultOnce sync.Once
	defaultChip *Chip
	defaultErr  error
)

// Default returns a shared Chip whose VCEK certifies GoodTCB.
func Default() (*Chip, error) {
	defaultOnce.Do(func() { defaultChip, defaultErr = New(GoodTCB) })
	return defaultChip, defaultErr
}

// New returns a Chip whose VCEK certifies vcekTCB and the chip's HWID.
func New(vcekTCB kds.TCBParts) (*Chip, error) {
	tcb, err := kds.ComposeTCBParts(vcekTCB)
	if err != nil {
		return nil, err
	}
	created := Now.Add(-time.Hour)
	b := &test.AmdSignerBuilder{
		Keys:             test.DefaultAmdKeys(),
		ProductName:      "Milan-B1",
		CSPID:            "go-sev-guest",
		ArkCreationTime:  created,
		AskCreationTime:  created,
		AsvkCreationTime: created,
		VcekCreationTime: created,
		VlekCreationTime: created,
		TCB:              tcb,
		VcekCustom:       test.CertOverride{Extensions: test.CustomExtensions(vcekTCB, ChipID(), "", "Milan-B1")},
	}
	copy(b.HWID[:], ChipID())
	signer, err := b.TestOnlyCertChain()
	if err != nil {
		return nil, fmt.Errorf("create fake AMD chain: %w", err)
	}
	table, err := signer.CertTableBytes()
	if err != nil {
		return nil, err
	}
	return &Chip{signer: signer, tcb: vcekTCB, table: table}, nil
}

// VCEK returns the chip's VCEK certificate.
func (c *Chip) VCEK() *x509.Certificate { return c.signer.Vcek }

// Roots trusts the chip's ARK/ASK/ASVK as the Milan roots (snp.Config
// TrustedRoots).
func (c *Chip) Roots() map[string][]*trust.AMDRootCerts {
	r := trust.AMDRootCertsProduct("Milan")
	r.ProductCerts = &trust.ProductCerts{Ark: c.signer.Ark, Ask: c.signer.Ask, Asvk: c.signer.Asvk}
	return map[string][]*trust.AMDRootCerts{"Milan": {r}}
}

// Report describes a report to sign; zero fields take defaults.
type Report struct {
	// ReportData is 64 bytes; default 64 × 0x5d. Evidence's reportData
	// argument, when not nil, takes precedence.
	ReportData []byte
	// Measurement is 48 bytes; default 48 × 0x3e.
	Measurement []byte
	// HostData is 32 bytes; default 32 × 0x40.
	HostData []byte
	// ChipID is 64 bytes; default ChipID().
	ChipID []byte
	// Policy is the guest policy; default Policy.
	Policy uint64
	// Reported, Committed, Current, Launch default to the VCEK's TCB.
	Reported, Committed, Current, Launch *kds.TCBParts
}

// DefaultMeasurement is the measurement of a zero Report.
var DefaultMeasurement = bytes.Repeat([]byte{0x3e}, abi.MeasurementSize)

func tcbOr(p *kds.TCBParts, def kds.TCBParts) uint64 {
	if p != nil {
		def = *p
	}
	v, _ := kds.ComposeTCBParts(def)
	return uint64(v)
}

func orBytes(b, def []byte) []byte {
	if b != nil {
		return b
	}
	return def
}

// Report returns r signed: 1184 bytes (SEV-SNP ABI spec, Table 23). It
// fails only if r's fields have the wrong sizes or a TCB does not compose.
func (c *Chip) Report(r Report) ([]byte, error) {
	policy := r.Policy
	if policy == 0 {
		policy = Policy
	}
	pb := &spb.Report{
		Version:         2,
		Policy:          policy,
		SignatureAlgo:   abi.SignEcdsaP384Sha384,
		ReportData:      orBytes(r.ReportData, bytes.Repeat([]byte{0x5d}, abi.ReportDataSize)),
		Measurement:     orBytes(r.Measurement, DefaultMeasurement),
		HostData:        orBytes(r.HostData, bytes.Repeat([]byte{0x40}, abi.HostDataSize)),
		FamilyId:        make([]byte, abi.FamilyIDSize),
		ImageId:         make([]byte, abi.ImageIDSize),
		IdKeyDigest:     make([]byte, abi.IDKeyDigestSize),
		AuthorKeyDigest: make([]byte, abi.AuthorKeyDigestSize),
		ReportId:        make([]byte, abi.ReportIDSize),
		ReportIdMa:      make([]byte, abi.ReportIDMASize),
		ChipId:          orBytes(r.ChipID, ChipID()),
		SignerInfo:      abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.VcekReportSigner}),
		PlatformInfo:    1,
		ReportedTcb:     tcbOr(r.Reported, c.tcb),
		CommittedTcb:    tcbOr(r.Committed, c.tcb),
		CurrentTcb:      tcbOr(r.Current, c.tcb),
		LaunchTcb:       tcbOr(r.Launch, c.tcb),
		Signature:       make([]byte, abi.SignatureSize),
	}
	raw, err := abi.ReportToAbiBytes(pb)
	if err != nil {
		return nil, err
	}
	sr, ss, err := c.signer.Sign(abi.SignedComponent(raw))
	if err != nil {
		return nil, err
	}
	if err := abi.SetSignature(sr, ss, raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// Evidence returns r signed with reportData (when not nil) as REPORT_DATA,
// followed by the chip's certificate table, as SNP_GET_EXT_REPORT returns
// it.
func (c *Chip) Evidence(r Report, reportData []byte) ([]byte, error) {
	if reportData != nil {
		r.ReportData = reportData
	}
	raw, err := c.Report(r)
	if err != nil {
		return nil, err
	}
	return append(raw, c.table...), nil
}

// Attester is a kbs/client Attester backed by a Chip.
type Attester struct {
	Chip   *Chip
	Report Report
	// As overrides the TEE name sent at /auth; default "snp".
	As attestation.TEE
}

// TEE returns As or "snp".
func (a *Attester) TEE() attestation.TEE {
	if a.As != "" {
		return a.As
	}
	return attestation.TEESNP
}

// Evidence signs a report binding reportData.
func (a *Attester) Evidence(_ context.Context, reportData []byte) ([]byte, error) {
	return a.Chip.Evidence(a.Report, reportData)
}
