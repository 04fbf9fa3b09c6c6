package snp

import (
	"bytes"
	"testing"

	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/cofferhq/coffer/attestation/snp/snptest"
)

// testNow is the verification time of every test; the fake chain is created
// an hour before.
var testNow = snptest.Now

var (
	goodTCB = snptest.GoodTCB
	lowTCB  = kds.TCBParts{BlSpl: 3, TeeSpl: 0, SnpSpl: 8, UcodeSpl: 115}
	// floorTCB is between lowTCB and goodTCB in every non-zero component.
	floorTCB = kds.TCBParts{BlSpl: 4, TeeSpl: 0, SnpSpl: 20, UcodeSpl: 200}
)

const (
	// basePolicy: SMT allowed (bit 16) and reserved bit 17 set.
	basePolicy  = snptest.Policy
	debugPolicy = snptest.DebugPolicy
)

func testChipID() []byte { return snptest.ChipID() }

func filled(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

// fakeChip is one fake AMD machine (snptest.Chip) whose VCEK certifies
// vcekTCB and the chip's HWID, as real KDS certificates do.
type fakeChip struct{ chip *snptest.Chip }

func newFakeChip(t testing.TB, vcekTCB kds.TCBParts) *fakeChip {
	t.Helper()
	c, err := snptest.New(vcekTCB)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeChip{chip: c}
}

// roots trusts the fake chip's ARK/ASK/ASVK as the Milan roots.
func (c *fakeChip) roots() map[string][]*trust.AMDRootCerts { return c.chip.Roots() }

type reportOpts struct {
	reportData, hostData, measurement, chipID []byte
	policy                                    uint64
	reported, committed, current, launch      *kds.TCBParts
}

func (o reportOpts) report() snptest.Report {
	return snptest.Report{
		ReportData: o.reportData, HostData: o.hostData, Measurement: o.measurement, ChipID: o.chipID,
		Policy: o.policy, Reported: o.reported, Committed: o.committed, Current: o.current, Launch: o.launch,
	}
}

// report returns a signed 1184-byte version 2 report. Unset TCBs are the
// VCEK's TCB; unset fields get fixed test values.
func (c *fakeChip) report(t testing.TB, o reportOpts) []byte {
	t.Helper()
	raw, err := c.chip.Report(o.report())
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// evidence is the report followed by the chip's certificate table, as
// SNP_GET_EXT_REPORT returns it.
func (c *fakeChip) evidence(t testing.TB, o reportOpts) []byte {
	t.Helper()
	ev, err := c.chip.Evidence(o.report(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}
