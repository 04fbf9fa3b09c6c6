package snp

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	test "github.com/google/go-sev-guest/testing"
	"github.com/google/go-sev-guest/verify/trust"
)

// testNow is the verification time of every test; the fake chain is created
// an hour before.
var testNow = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

var (
	goodTCB = kds.TCBParts{BlSpl: 4, TeeSpl: 0, SnpSpl: 22, UcodeSpl: 213}
	lowTCB  = kds.TCBParts{BlSpl: 3, TeeSpl: 0, SnpSpl: 8, UcodeSpl: 115}
	// floorTCB is between lowTCB and goodTCB in every non-zero component.
	floorTCB = kds.TCBParts{BlSpl: 4, TeeSpl: 0, SnpSpl: 20, UcodeSpl: 200}
)

const (
	// basePolicy: SMT allowed (bit 16) and reserved bit 17 set.
	basePolicy  = 0x30000
	debugPolicy = basePolicy | 1<<19
)

func testChipID() []byte {
	id := make([]byte, abi.ChipIDSize)
	for i := range id {
		id[i] = byte(0xc0 + i)
	}
	return id
}

func filled(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

// fakeChip is one fake AMD machine: a test-only ARK→ASK→VCEK chain from
// go-sev-guest's testing package, with the VCEK certifying vcekTCB and the
// chip's HWID, as real KDS certificates do.
type fakeChip struct {
	signer *test.AmdSigner
	tcb    kds.TCBParts
}

func newFakeChip(t testing.TB, vcekTCB kds.TCBParts) *fakeChip {
	t.Helper()
	tcb, err := kds.ComposeTCBParts(vcekTCB)
	if err != nil {
		t.Fatal(err)
	}
	created := testNow.Add(-time.Hour)
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
		VcekCustom:       test.CertOverride{Extensions: test.CustomExtensions(vcekTCB, testChipID(), "", "Milan-B1")},
	}
	copy(b.HWID[:], testChipID())
	signer, err := b.TestOnlyCertChain()
	if err != nil {
		t.Fatalf("create fake AMD chain: %v", err)
	}
	return &fakeChip{signer: signer, tcb: vcekTCB}
}

// roots trusts the fake chip's ARK/ASK/ASVK as the Milan roots.
func (c *fakeChip) roots() map[string][]*trust.AMDRootCerts {
	r := trust.AMDRootCertsProduct(Milan)
	r.ProductCerts = &trust.ProductCerts{Ark: c.signer.Ark, Ask: c.signer.Ask, Asvk: c.signer.Asvk}
	return map[string][]*trust.AMDRootCerts{Milan: {r}}
}

type reportOpts struct {
	reportData, hostData, measurement, chipID []byte
	policy                                    uint64
	reported, committed, current, launch      *kds.TCBParts
}

func tcbOr(p *kds.TCBParts, def kds.TCBParts) uint64 {
	if p != nil {
		def = *p
	}
	v, err := kds.ComposeTCBParts(def)
	if err != nil {
		panic(err)
	}
	return uint64(v)
}

func orBytes(b []byte, def []byte) []byte {
	if b != nil {
		return b
	}
	return def
}

// report returns a signed 1184-byte version 2 report. Unset TCBs are the
// VCEK's TCB; unset fields get fixed test values.
func (c *fakeChip) report(t testing.TB, o reportOpts) []byte {
	t.Helper()
	policy := o.policy
	if policy == 0 {
		policy = basePolicy
	}
	pb := &spb.Report{
		Version:         2,
		Policy:          policy,
		SignatureAlgo:   abi.SignEcdsaP384Sha384,
		ReportData:      orBytes(o.reportData, filled(abi.ReportDataSize, 0x5d)),
		Measurement:     orBytes(o.measurement, filled(abi.MeasurementSize, 0x3e)),
		HostData:        orBytes(o.hostData, filled(abi.HostDataSize, 0x40)),
		FamilyId:        make([]byte, abi.FamilyIDSize),
		ImageId:         make([]byte, abi.ImageIDSize),
		IdKeyDigest:     make([]byte, abi.IDKeyDigestSize),
		AuthorKeyDigest: make([]byte, abi.AuthorKeyDigestSize),
		ReportId:        make([]byte, abi.ReportIDSize),
		ReportIdMa:      make([]byte, abi.ReportIDMASize),
		ChipId:          orBytes(o.chipID, testChipID()),
		SignerInfo:      abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.VcekReportSigner}),
		PlatformInfo:    1,
		ReportedTcb:     tcbOr(o.reported, c.tcb),
		CommittedTcb:    tcbOr(o.committed, c.tcb),
		CurrentTcb:      tcbOr(o.current, c.tcb),
		LaunchTcb:       tcbOr(o.launch, c.tcb),
		Signature:       make([]byte, abi.SignatureSize),
	}
	raw, err := abi.ReportToAbiBytes(pb)
	if err != nil {
		t.Fatal(err)
	}
	r, s, err := c.signer.Sign(abi.SignedComponent(raw))
	if err != nil {
		t.Fatal(err)
	}
	if err := abi.SetSignature(r, s, raw); err != nil {
		t.Fatal(err)
	}
	return raw
}

// evidence is the report followed by the chip's certificate table, as
// SNP_GET_EXT_REPORT returns it.
func (c *fakeChip) evidence(t testing.TB, o reportOpts) []byte {
	t.Helper()
	table, err := c.signer.CertTableBytes()
	if err != nil {
		t.Fatal(err)
	}
	return append(c.report(t, o), table...)
}
