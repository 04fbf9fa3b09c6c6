package attester

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/sim"
	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"
	sevclient "github.com/google/go-sev-guest/client"
	sevtest "github.com/google/go-sev-guest/testing"
	tdxclient "github.com/google/go-tdx-guest/client"
	tdxtest "github.com/google/go-tdx-guest/testing"
	tdxdata "github.com/google/go-tdx-guest/testing/testdata"
	"github.com/stretchr/testify/require"
)

var (
	testMeas = bytes.Repeat([]byte{0x5a}, 48)
	testHost = bytes.Repeat([]byte{0xa5}, 32)
)

// runtimeHash stands in for a KBS runtime-data hash (SHA-384, 48 bytes).
func runtimeHash() []byte {
	h := sha512.Sum384([]byte("nonce and tee-pubkey"))
	return h[:]
}

func padded(b []byte) []byte { return append(bytes.Clone(b), make([]byte, 64-len(b))...) }

// fakeFWCfg writes the sim fw_cfg items a sim VM's guest sees into a
// by_name tree and returns its root.
func fakeFWCfg(t *testing.T, s *sim.Signer, meas, host string) string {
	t.Helper()
	root := t.TempDir()
	r, err := s.Reporter()
	require.NoError(t, err)
	ident, err := r.MarshalPEM()
	require.NoError(t, err)
	for name, v := range map[string][]byte{sim.FWCfgIdentity: ident, sim.FWCfgMeasurement: []byte(meas), sim.FWCfgHostData: []byte(host)} {
		p := fwCfgPath(root, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, v, 0o400))
	}
	return root
}

func TestSimEndToEnd(t *testing.T) {
	s, err := sim.Generate(sim.GenerateOptions{})
	require.NoError(t, err)
	root := fakeFWCfg(t, s, hex.EncodeToString(testMeas)+"\n", hex.EncodeToString(testHost))

	a, err := Detect(Options{FWCfgRoot: root, NoTSM: true})
	require.NoError(t, err)
	require.IsType(t, &Sim{}, a)
	require.Equal(t, attestation.TEESim, a.TEE())

	ev, err := a.Evidence(context.Background(), runtimeHash())
	require.NoError(t, err)
	v, err := sim.NewVerifier(sim.Config{RootPEM: s.RootPEM()})
	require.NoError(t, err)
	claims, err := v.Verify(context.Background(), ev, attestation.VerifyOptions{ReportData: padded(runtimeHash()), HostData: testHost})
	require.NoError(t, err)
	require.Equal(t, hex.EncodeToString(testMeas), claims.Measurement)
	require.Equal(t, hex.EncodeToString(testHost), claims.HostData)
	require.Equal(t, hex.EncodeToString(padded(runtimeHash())), claims.ReportData)

	m, err := Measurement(a.TEE(), ev)
	require.NoError(t, err)
	require.Equal(t, testMeas, m)
	bind, err := a.InitDataBinding(context.Background())
	require.NoError(t, err)
	require.Equal(t, testHost, bind)

	_, err = a.Evidence(context.Background(), make([]byte, 65))
	require.ErrorIs(t, err, ErrReportDataTooLong)
}

func TestSimBadItems(t *testing.T) {
	s, err := sim.Generate(sim.GenerateOptions{})
	require.NoError(t, err)
	root := fakeFWCfg(t, s, "zz", hex.EncodeToString(testHost))
	_, err = NewSim(root)
	require.ErrorContains(t, err, `fw_cfg item opt/cc/sim-measurement holds "zz": want 96 hex digits (48 bytes)`)

	require.NoError(t, os.WriteFile(fwCfgPath(root, sim.FWCfgMeasurement), []byte(hex.EncodeToString(testMeas)), 0o600))
	require.NoError(t, os.Remove(fwCfgPath(root, sim.FWCfgHostData)))
	_, err = NewSim(root)
	require.ErrorContains(t, err, "read fw_cfg item opt/cc/sim-host-data")

	root = fakeFWCfg(t, s, hex.EncodeToString(testMeas), hex.EncodeToString(testHost))
	require.NoError(t, os.WriteFile(fwCfgPath(root, sim.FWCfgIdentity), []byte("junk"), 0o600))
	_, err = Detect(Options{FWCfgRoot: root, NoTSM: true})
	require.ErrorContains(t, err, "fw_cfg opt/cc/sim-identity: parse sim identity")
}

// fakeTSM is a configfs-tsm report subsystem whose provider is provider
// and whose outblob is out(inblob), with auxblob aux.
func fakeTSM(provider string, out func(inblob []byte) ([]byte, error), aux []byte) configfsi.Client {
	sub := faketsm.ReportV7(0)
	// The kernel's provider attribute is readable before any write; the
	// fake's is only after one, so seed it.
	makeEntry := sub.MakeEntry
	sub.MakeEntry = func() *faketsm.ReportEntry {
		e := makeEntry()
		e.ROAttrs = map[string][]byte{"provider": []byte(provider + "\n")}
		return e
	}
	base := sub.ReadAttr
	sub.ReadAttr = func(e *faketsm.ReportEntry, attr string) ([]byte, error) {
		switch attr {
		case "provider":
			return []byte(provider + "\n"), nil
		case "auxblob":
			return aux, nil
		case "outblob":
			return out(e.InAttrs["inblob"].Value)
		}
		return base(e, attr)
	}
	return &faketsm.Client{Subsystems: map[string]configfsi.Client{"report": sub}}
}

func noTEEPaths(t *testing.T) Options {
	dir := t.TempDir()
	return Options{
		FWCfgRoot:      filepath.Join(dir, "fw_cfg"),
		SEVGuestDevice: filepath.Join(dir, "sev-guest"),
		TDXGuestDevice: filepath.Join(dir, "tdx_guest"),
	}
}

// TestSNPConfigfsTSM fakes an SNP kernel's configfs-tsm with a sim chain
// standing in for the AMD firmware (same report format), so the evidence
// can be verified end to end.
func TestSNPConfigfsTSM(t *testing.T) {
	s, err := sim.Generate(sim.GenerateOptions{})
	require.NoError(t, err)
	var certTable []byte
	out := func(in []byte) ([]byte, error) {
		ev, err := s.Evidence(sim.ReportOptions{Measurement: testMeas, HostData: testHost, ReportData: in})
		if err != nil {
			return nil, err
		}
		certTable = ev[1184:]
		return ev[:1184], nil
	}
	_, _ = out(make([]byte, 64))
	o := noTEEPaths(t)
	o.TSM = fakeTSM("sev_guest", out, certTable)
	a, err := Detect(o)
	require.NoError(t, err)
	require.IsType(t, &SNP{}, a)
	require.Equal(t, attestation.TEESNP, a.TEE())

	ev, err := a.Evidence(context.Background(), runtimeHash())
	require.NoError(t, err)
	v, err := sim.NewVerifier(sim.Config{RootPEM: s.RootPEM()})
	require.NoError(t, err)
	claims, err := v.Verify(context.Background(), ev, attestation.VerifyOptions{ReportData: padded(runtimeHash()), HostData: testHost})
	require.NoError(t, err, "report plus auxblob cert table verifies")
	require.Equal(t, hex.EncodeToString(testMeas), claims.Measurement)
	bind, err := a.InitDataBinding(context.Background())
	require.NoError(t, err)
	require.Equal(t, testHost, bind)

	// A provider of another TEE is refused by the SNP attester.
	wrong := NewSNP(fakeTSM("tdx_guest", out, nil), "", nil)
	_, err = wrong.Evidence(context.Background(), nil)
	require.ErrorContains(t, err, `provider is "tdx_guest", want "sev_guest"`)
}

// TestSNPDevice uses go-sev-guest's fake sev-guest device (fake AMD chain)
// for the /dev/sev-guest fallback with an extended report.
func TestSNPDevice(t *testing.T) {
	tcs := sevtest.TestCases()
	dev, err := sevtest.TcDevice(tcs, &sevtest.DeviceOptions{Now: time.Now()})
	require.NoError(t, err)
	o := noTEEPaths(t)
	o.NoTSM = true
	require.NoError(t, os.WriteFile(o.SEVGuestDevice, nil, 0o600))
	var opened string
	o.OpenSEVDevice = func(p string) (sevclient.Device, error) { opened = p; return dev, nil }
	a, err := Detect(o)
	require.NoError(t, err)
	require.IsType(t, &SNP{}, a)

	tc := tcs[0]
	ev, err := a.Evidence(context.Background(), tc.Input[:])
	require.NoError(t, err)
	require.Equal(t, o.SEVGuestDevice, opened)
	// The fake device signs the report; the signed part is the test case.
	require.True(t, bytes.Equal(tc.Output[:0x2a0], ev[:0x2a0]), "the report is the device's")
	require.True(t, bytes.Equal(dev.Certs, ev[1184:]), "the extended report's certificate table follows the report")
}

func TestTDXConfigfsTSM(t *testing.T) {
	var gotIn []byte
	o := noTEEPaths(t)
	o.TSM = fakeTSM("tdx_guest", func(in []byte) ([]byte, error) { gotIn = bytes.Clone(in); return tdxdata.RawQuote, nil }, nil)
	a, err := Detect(o)
	require.NoError(t, err)
	require.IsType(t, &TDX{}, a)
	require.Equal(t, attestation.TEETDX, a.TEE())

	ev, err := a.Evidence(context.Background(), runtimeHash())
	require.NoError(t, err)
	require.True(t, bytes.Equal(tdxdata.RawQuote, ev), "evidence is the configfs-tsm outblob")
	require.Equal(t, padded(runtimeHash()), gotIn, "REPORTDATA is the hash zero-padded to 64 bytes")

	bind, err := a.InitDataBinding(context.Background())
	require.NoError(t, err)
	require.Len(t, bind, 48)
	m, err := Measurement(attestation.TEETDX, ev)
	require.NoError(t, err)
	require.Len(t, m, 48)
	// Offsets in a v4 quote: 48-byte header, then the TD quote body with
	// MRTD at 136 and MRCONFIGID at 184 (Intel TDX DCAP quote spec A.3).
	require.Equal(t, tdxdata.RawQuote[48+136:48+184], m)
	require.Equal(t, tdxdata.RawQuote[48+184:48+232], bind)
}

func TestTDXDevice(t *testing.T) {
	tcs := tdxtest.TestCases()
	dev, err := tdxtest.TcDevice(tcs)
	require.NoError(t, err)
	o := noTEEPaths(t)
	o.NoTSM = true
	require.NoError(t, os.WriteFile(o.TDXGuestDevice, nil, 0o600))
	o.OpenTDXDevice = func(string) (tdxclient.Device, error) { return dev, nil }
	a, err := Detect(o)
	require.NoError(t, err)
	require.IsType(t, &TDX{}, a)
	ev, err := a.Evidence(context.Background(), tcs[0].Input[:])
	require.NoError(t, err)
	require.True(t, bytes.Equal(tcs[0].Quote, ev), "evidence is the device's quote")
}

func TestDetectNone(t *testing.T) {
	o := noTEEPaths(t)
	o.TSM = fakeTSM("fake", nil, nil)
	_, err := Detect(o)
	require.ErrorIs(t, err, ErrNoTEE)
	for _, want := range []string{
		filepath.Join(o.FWCfgRoot, "opt/cc/sim-identity/raw"),
		`configfs-tsm provider "fake" is neither sev_guest nor tdx_guest`,
		o.SEVGuestDevice, o.TDXGuestDevice,
	} {
		require.ErrorContains(t, err, want)
	}
}

// TestDetectPrefersHardwareOverSim checks that sim fw_cfg items a host
// adds to a real SNP guest do not turn it into a sim guest.
func TestDetectPrefersHardwareOverSim(t *testing.T) {
	s, err := sim.Generate(sim.GenerateOptions{})
	require.NoError(t, err)
	o := noTEEPaths(t)
	o.FWCfgRoot = fakeFWCfg(t, s, hex.EncodeToString(testMeas), hex.EncodeToString(testHost))
	o.TSM = fakeTSM(providerSNP, nil, nil)
	a, err := Detect(o)
	require.NoError(t, err)
	require.Equal(t, attestation.TEESNP, a.TEE())
}

// providerlessTSM is configfs-tsm as the kernel shows it when the tsm
// module is loaded but no provider registered (sev-guest and tdx-guest
// found no device, as in every sim or plain VM): the report directory
// exists, and creating an entry fails with ENXIO.
type providerlessTSM struct{}

func (providerlessTSM) MkdirTemp(dir, _ string) (string, error) {
	return "", &os.PathError{Op: "mkdir", Path: dir + "/entry", Err: syscall.ENXIO}
}

func (providerlessTSM) ReadFile(name string) ([]byte, error) {
	return nil, &os.PathError{Op: "open", Path: name, Err: syscall.ENOENT}
}

func (providerlessTSM) WriteFile(name string, _ []byte) error {
	return &os.PathError{Op: "open", Path: name, Err: syscall.ENOENT}
}

func (providerlessTSM) RemoveAll(string) error { return nil }

// TestDetectSimWithProviderlessTSM: the guest kernel loads tsm in every VM,
// so a sim guest has a configfs-tsm without provider; Detect must fall
// through it to the sim, and name it when nothing else is there.
func TestDetectSimWithProviderlessTSM(t *testing.T) {
	s, err := sim.Generate(sim.GenerateOptions{})
	require.NoError(t, err)
	o := noTEEPaths(t)
	o.TSM = providerlessTSM{}
	_, err = Detect(o)
	require.ErrorIs(t, err, ErrNoTEE)
	require.ErrorContains(t, err, "no such device or address")

	o.FWCfgRoot = fakeFWCfg(t, s, hex.EncodeToString(testMeas), hex.EncodeToString(testHost))
	a, err := Detect(o)
	require.NoError(t, err)
	require.Equal(t, attestation.TEESim, a.TEE())
}
