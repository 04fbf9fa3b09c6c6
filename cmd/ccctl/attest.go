package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/urfave/cli/v2"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/sim"
	"github.com/cofferhq/coffer/attestation/snp"
	"github.com/cofferhq/coffer/attestation/tdx"
	"github.com/cofferhq/coffer/kbs/refvalues"
)

// attestCommand returns `ccctl attest`, offline evidence verification.
func attestCommand() *cli.Command {
	return &cli.Command{
		Name:  "attest",
		Usage: "verify TEE evidence offline; create sim TEE chains",
		Subcommands: []*cli.Command{
			attestVerifyCommand(),
			simChainCommand(),
		},
	}
}

func attestVerifyCommand() *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "verify SNP, TDX or sim evidence and print its claims as JSON",
		Description: "Parses the evidence, verifies its signature and certificate chain to the vendor root\n" +
			"(AMD ARK for snp, Intel SGX Root CA for tdx, the --sim-root for sim) and validates it:\n" +
			"debug forbidden unless --allow-debug, TCB floors, reference values, REPORT_DATA.\n" +
			"\n" +
			"On success the claims JSON is printed on stdout (exit 0). On failure nothing is\n" +
			"printed on stdout and the failed check is named on stderr (\"check <name> failed: ...\",\n" +
			"exit 1).\n" +
			"\n" +
			"Without --report-data, REPORT_DATA is NOT checked (for historic samples whose nonce\n" +
			"is gone): the output says \"report_data_checked\": false. --now sets the time\n" +
			"certificates and collateral are checked at, so old samples can be verified.\n" +
			"\n" +
			"--reference-values FILE is JSON, either {\"measurement\": [\"<96 hex>\", ...]} or the\n" +
			"cc-kbs reference-values document ({\"snp\": {\"measurements\": [...], \"min_tcb\": {...}}, ...}).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "tee", Required: true, Usage: "evidence `KIND`: snp, tdx or sim"},
			&cli.StringFlag{Name: "evidence", Required: true, Usage: "evidence `FILE`: raw SNP/sim report (1184 bytes), optionally followed by its certificate table, or a raw TDX quote"},
			&cli.StringFlag{Name: "vcek", Usage: "snp/sim: VCEK certificate `FILE` (DER or PEM), used instead of one in the evidence"},
			&cli.StringFlag{Name: "collateral", Usage: "tdx: offline PCS collateral `DIR` (tcb_info.json, qe_identity.json and their *_issuer_chain.pem); snp: offline VCEK store DIR (vcek/<chip-id>/<tcb>_vcek.der)"},
			&cli.StringFlag{Name: "now", Usage: "verify certificates and collateral at `TIME` (RFC 3339) instead of now"},
			&cli.StringFlag{Name: "reference-values", Usage: "JSON `FILE` of accepted measurements (see above); the measurement must be listed"},
			&cli.StringFlag{Name: "report-data", Usage: "expected REPORT_DATA, up to 64 bytes as `HEX` (shorter values are zero-padded, as Trustee does); absent: not checked"},
			&cli.StringFlag{Name: "host-data", Usage: "expected HOST_DATA (snp/sim, 32 bytes) or MRCONFIGID (tdx, 48 bytes) as `HEX`"},
			&cli.StringFlag{Name: "sim-root", Usage: "sim: trusted sim root `FILE` (root.pem: ASK then ARK); sim evidence is never trusted without it"},
			&cli.StringFlag{Name: "min-tcb", Usage: "snp/sim: minimum TCB_VERSION for reported, committed and launch TCB, as a 64-bit `NUMBER` (0x… for hex)"},
			&cli.BoolFlag{Name: "allow-debug", Usage: "accept debug guests (policy DEBUG / TD ATTRIBUTES.DEBUG)"},
		},
		Action: func(c *cli.Context) error {
			return runAttestVerify(c, attestVerifyArgs{
				tee:             c.String("tee"),
				evidence:        c.String("evidence"),
				vcek:            c.String("vcek"),
				collateral:      c.String("collateral"),
				now:             c.String("now"),
				referenceValues: c.String("reference-values"),
				reportData:      c.String("report-data"),
				hostData:        c.String("host-data"),
				simRoot:         c.String("sim-root"),
				minTCB:          c.String("min-tcb"),
				allowDebug:      c.Bool("allow-debug"),
			}, c.App.Writer, c.App.ErrWriter)
		},
	}
}

type attestVerifyArgs struct {
	tee, evidence, vcek, collateral, now, referenceValues, reportData, hostData, simRoot, minTCB string
	allowDebug                                                                                   bool
}

// attestRefs are the reference values that apply to one TEE.
type attestRefs struct {
	measurements []string
	minTCB       *kds.TCBParts
	minTeeTCBSVN []byte
}

func runAttestVerify(c *cli.Context, a attestVerifyArgs, stdout, stderr io.Writer) error {
	tee := attestation.TEE(a.tee)
	if tee != attestation.TEESNP && tee != attestation.TEETDX && tee != attestation.TEESim {
		return fmt.Errorf("--tee %q: want snp, tdx or sim", a.tee)
	}
	evidence, err := readLimited(a.evidence)
	if err != nil {
		return fmt.Errorf("read evidence: %w", err)
	}
	opts := attestation.VerifyOptions{SkipReportData: a.reportData == ""}
	if a.reportData != "" {
		rd, err := decodeHexFlag("report-data", a.reportData)
		if err != nil {
			return err
		}
		if len(rd) > abi.ReportDataSize {
			return fmt.Errorf("--report-data is %d bytes, REPORT_DATA holds %d", len(rd), abi.ReportDataSize)
		}
		opts.ReportData = make([]byte, abi.ReportDataSize)
		copy(opts.ReportData, rd)
	}
	if a.hostData != "" {
		if opts.HostData, err = decodeHexFlag("host-data", a.hostData); err != nil {
			return err
		}
	}
	if a.now != "" {
		if opts.Now, err = time.Parse(time.RFC3339, a.now); err != nil {
			return fmt.Errorf("--now %q: want RFC 3339, e.g. 2023-07-01T00:00:00Z: %w", a.now, err)
		}
	}
	refs, err := readAttestRefs(a.referenceValues, tee)
	if err != nil {
		return err
	}
	if a.vcek != "" {
		if tee == attestation.TEETDX {
			return fmt.Errorf("--vcek applies to snp and sim evidence, not tdx")
		}
		b, err := readLimited(a.vcek)
		if err != nil {
			return fmt.Errorf("read VCEK: %w", err)
		}
		cert, err := trust.ParseCert(b)
		if err != nil {
			return fmt.Errorf("parse VCEK %s (want DER or PEM): %w", a.vcek, err)
		}
		if evidence, err = snp.AttachCert(evidence, abi.VcekGUID, cert.Raw); err != nil {
			return attestation.Fail(attestation.CheckParse, err)
		}
	}
	minTCB, err := attestMinTCB(a.minTCB, refs.minTCB)
	if err != nil {
		return err
	}

	var v attestation.Verifier
	// Notes about checks that were skipped are printed only once the
	// evidence verified: after a failure they would read as the cause.
	var notes []string
	switch tee {
	case attestation.TEESNP:
		v, err = snp.NewVerifier(snp.Config{CertDir: a.collateral, MinimumTCB: minTCB, AllowDebug: a.allowDebug})
	case attestation.TEESim:
		var root []byte
		if a.simRoot != "" {
			if root, err = readLimited(a.simRoot); err != nil {
				return fmt.Errorf("read sim root: %w", err)
			}
		}
		v, err = sim.NewVerifier(sim.Config{RootPEM: root, MinimumTCB: minTCB, AllowDebug: a.allowDebug})
	case attestation.TEETDX:
		var tv *tdx.Verifier
		tv, err = tdx.NewVerifier(tdx.Config{CollateralDir: a.collateral, MinimumTeeTcbSvn: refs.minTeeTCBSVN, AllowDebug: a.allowDebug})
		if err == nil && !tv.ChecksCollateral() {
			notes = append(notes, "no --collateral: TCB status and QE identity were not checked, only the PCK chain and signatures")
		}
		v = tv
	}
	if err != nil {
		return err
	}
	claims, err := v.Verify(c.Context, evidence, opts)
	if err != nil {
		return err
	}
	if refs.measurements != nil && !containsFold(refs.measurements, claims.Measurement) {
		return attestation.Fail(attestation.CheckMeasurement, fmt.Errorf("measurement %s is not among the %d reference values in %s", claims.Measurement, len(refs.measurements), a.referenceValues))
	}
	if opts.SkipReportData {
		notes = append(notes, "no --report-data: REPORT_DATA was not checked, so the evidence is not bound to any nonce or key")
	}
	for _, n := range notes {
		fmt.Fprintln(stderr, "note:", n)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(attestOutput(claims, !opts.SkipReportData))
}

// snpOutput and tdxOutput fix the printed keys, so zero values still appear.
type snpOutput struct {
	TEE               attestation.TEE `json:"tee"`
	Product           string          `json:"product"`
	Measurement       string          `json:"measurement"`
	HostData          string          `json:"host_data"`
	ReportData        string          `json:"report_data"`
	ReportDataChecked bool            `json:"report_data_checked"`
	Policy            uint64          `json:"policy"`
	Debug             bool            `json:"debug"`
	ReportedTCB       uint64          `json:"reported_tcb"`
	CommittedTCB      uint64          `json:"committed_tcb"`
	LaunchTCB         uint64          `json:"launch_tcb"`
	ChipID            string          `json:"chip_id"`
}

type tdxOutput struct {
	TEE               attestation.TEE `json:"tee"`
	Measurement       string          `json:"measurement"`
	MRTD              string          `json:"mr_td"`
	RTMR              []string        `json:"rtmr"`
	MRConfigID        string          `json:"mr_config_id"`
	ReportData        string          `json:"report_data"`
	ReportDataChecked bool            `json:"report_data_checked"`
	TeeTCBSVN         string          `json:"tee_tcb_svn"`
	Debug             bool            `json:"debug"`
}

func attestOutput(c *attestation.Claims, reportDataChecked bool) any {
	if c.TEE == attestation.TEETDX {
		return tdxOutput{TEE: c.TEE, Measurement: c.Measurement, MRTD: c.MRTD, RTMR: c.RTMR, MRConfigID: c.MRConfigID,
			ReportData: c.ReportData, ReportDataChecked: reportDataChecked, TeeTCBSVN: c.TeeTCBSVN, Debug: c.Debug}
	}
	return snpOutput{TEE: c.TEE, Product: c.Product, Measurement: c.Measurement, HostData: c.HostData, ReportData: c.ReportData,
		ReportDataChecked: reportDataChecked, Policy: c.Policy, Debug: c.Debug, ReportedTCB: c.ReportedTCB,
		CommittedTCB: c.CommittedTCB, LaunchTCB: c.LaunchTCB, ChipID: c.ChipID}
}

// readAttestRefs reads --reference-values: the simple {"measurement": [...]}
// form, or a cc-kbs reference-values document (its entry for tee).
func readAttestRefs(path string, tee attestation.TEE) (attestRefs, error) {
	if path == "" {
		return attestRefs{}, nil
	}
	b, err := readLimited(path)
	if err != nil {
		return attestRefs{}, fmt.Errorf("read reference values: %w", err)
	}
	var simple struct {
		Measurement []string `json:"measurement"`
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&simple); err == nil && simple.Measurement != nil {
		refs := attestRefs{measurements: []string{}}
		for _, m := range simple.Measurement {
			n, err := refvalues.NormalizeMeasurement(m)
			if err != nil {
				return attestRefs{}, fmt.Errorf("reference values %s: %w", path, err)
			}
			refs.measurements = append(refs.measurements, n)
		}
		return refs, nil
	}
	doc, err := refvalues.Parse(b)
	if err != nil {
		return attestRefs{}, fmt.Errorf("reference values %s: want {\"measurement\": [\"<96 hex>\", ...]} or a cc-kbs reference-values document: %w", path, err)
	}
	tv := doc.For(tee)
	refs := attestRefs{measurements: tv.Measurements}
	if refs.measurements == nil {
		refs.measurements = []string{}
	}
	if tv.MinTCB != nil {
		refs.minTCB = &kds.TCBParts{BlSpl: tv.MinTCB.Bootloader, TeeSpl: tv.MinTCB.TEE, SnpSpl: tv.MinTCB.SNP, UcodeSpl: tv.MinTCB.Microcode}
	}
	if tv.MinTeeTCBSVN != "" {
		refs.minTeeTCBSVN, _ = hex.DecodeString(tv.MinTeeTCBSVN)
	}
	return refs, nil
}

// attestMinTCB combines --min-tcb and the reference values' floor; both must
// hold, so each component takes the higher of the two.
func attestMinTCB(flag string, ref *kds.TCBParts) (kds.TCBParts, error) {
	var floor kds.TCBParts
	if flag != "" {
		n, err := strconv.ParseUint(flag, 0, 64)
		if err != nil {
			return floor, fmt.Errorf("--min-tcb %q: want a 64-bit TCB_VERSION such as 0xd316000000000004: %w", flag, err)
		}
		floor = kds.DecomposeTCBVersion(kds.TCBVersion(n))
	}
	if ref != nil {
		floor = kds.TCBParts{
			BlSpl: max(floor.BlSpl, ref.BlSpl), TeeSpl: max(floor.TeeSpl, ref.TeeSpl),
			Spl4: floor.Spl4, Spl5: floor.Spl5, Spl6: floor.Spl6, Spl7: floor.Spl7,
			SnpSpl: max(floor.SnpSpl, ref.SnpSpl), UcodeSpl: max(floor.UcodeSpl, ref.UcodeSpl),
		}
	}
	return floor, nil
}

func decodeHexFlag(name, s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(s), "0x"))
	if err != nil {
		return nil, fmt.Errorf("--%s: not hex: %w", name, err)
	}
	return b, nil
}

func containsFold(list []string, s string) bool {
	for _, m := range list {
		if strings.EqualFold(m, s) {
			return true
		}
	}
	return false
}

// maxInputBytes bounds every file `ccctl attest verify` reads (bytes). An
// SNP report with its certificate table or a TDX quote is a few KiB.
const maxInputBytes = 16 << 20

// readLimited reads a file of at most maxInputBytes, so that a wrong path
// such as /dev/zero fails at once instead of exhausting memory.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxInputBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxInputBytes {
		return nil, fmt.Errorf("%s is larger than %d MiB: not an evidence, certificate or reference-values file", path, maxInputBytes>>20)
	}
	return b, nil
}
