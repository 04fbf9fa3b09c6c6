package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/attestation/measure/ovmf"
	measuresnp "github.com/cofferhq/coffer/attestation/measure/snp"
	measuretdx "github.com/cofferhq/coffer/attestation/measure/tdx"
	"github.com/cofferhq/coffer/attestation/sim"
	"github.com/cofferhq/coffer/guest/build"
	"github.com/cofferhq/coffer/kbs/refvalues"
)

// measureCommand returns `ccctl measure`: the launch measurement (SNP
// MEASUREMENT, TDX MRTD, or the sim TEE's value) a guest will report,
// computed from the files it boots. The digest is printed as lower-case hex
// on the last line of stdout, or with --json as the {"tee", "measurement"}
// entry `ccctl kbs reference-values add --from-json` takes.
func measureCommand() *cli.Command {
	return &cli.Command{
		Name:  "measure",
		Usage: "compute a guest's launch measurement (SNP, TDX MRTD, sim) from its files",
		Description: "snp: ccctl measure --tee snp --ovmf FILE [--kernel FILE [--initrd FILE] [--append STRING]]\n" +
			"       --vcpus N (--vcpu-type NAME | --vcpu-sig HEX) [--guest-features HEX] [--ovmf-hash HEX]\n" +
			"tdx: ccctl measure --tee tdx --tdvf FILE        (MRTD only; RTMRs are not computed)\n" +
			"sim: ccctl measure --tee sim --kernel FILE [--initrd FILE] [--append STRING]\n" +
			"\n" +
			"--guest DIR takes the kernel, initrd and command line from the guest build's\n" +
			"manifest.json (checking the files' SHA-256 against it); --append overrides the\n" +
			"manifest command line, as the shim config's cmdline does. snp and tdx still need\n" +
			"--ovmf / --tdvf.\n" +
			"\n" +
			"The digest is printed in lower-case hex on the last line of stdout; --json prints\n" +
			"{\"tee\": ..., \"measurement\": ...} for `ccctl kbs reference-values add --from-json -`.\n" +
			"On a bad input nothing is printed on stdout. See docs/measurement.md.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "tee", Required: true, Usage: "`TEE`: snp, tdx or sim"},
			&cli.StringFlag{Name: "guest", Usage: "take kernel, initrd and cmdline from the guest build `DIR` (its manifest.json)"},
			&cli.StringFlag{Name: "ovmf", Usage: "snp: the OVMF `FILE` (AmdSevX64 build for a kernel boot)"},
			&cli.StringFlag{Name: "tdvf", Usage: "tdx: the TDVF `FILE` (OVMF built with TDX support)"},
			&cli.StringFlag{Name: "kernel", Usage: "kernel `FILE` (QEMU -kernel)"},
			&cli.StringFlag{Name: "initrd", Usage: "initrd `FILE` (QEMU -initrd); needs --kernel"},
			&cli.StringFlag{Name: "append", Usage: "kernel command line `STRING` (QEMU -append); needs --kernel"},
			&cli.IntFlag{Name: "vcpus", Usage: "snp: number of vCPUs `N` (at least 1)"},
			&cli.StringFlag{Name: "vcpu-type", Usage: "snp: QEMU CPU model `NAME` (EPYC, EPYC-v4, EPYC-Rome, EPYC-Milan, EPYC-Genoa, ...)"},
			&cli.StringFlag{Name: "vcpu-sig", Usage: "snp: vCPU CPUID signature as `HEX` (e.g. 0xa00f11), instead of --vcpu-type"},
			&cli.StringFlag{Name: "guest-features", Value: "0x1", Usage: "snp: VMSA SEV_FEATURES as `HEX` (0x1 SNPActive; 0x21 adds DebugSwap)"},
			&cli.StringFlag{Name: "ovmf-hash", Usage: "snp: precomputed launch digest after the OVMF pages, 96 `HEX` characters"},
			&cli.StringFlag{Name: "vmm", Value: string(measuresnp.VMMQEMU), Usage: "snp: `VMM` that launches the guest (only qemu)"},
			&cli.StringFlag{Name: "tdx-page-order", Value: "single-pass", Usage: "tdx: `ORDER` the VMM adds and extends TDVF pages in: single-pass (upstream KVM ≥ 6.16, QEMU ≥ 10.1) or two-pass (older TDX trees)"},
			&cli.BoolFlag{Name: "json", Usage: "print {\"tee\", \"measurement\"} for `ccctl kbs reference-values add --from-json`"},
		},
		Action: func(c *cli.Context) error {
			tee := attestation.TEE(c.String("tee"))
			in, err := measureInputs(c, tee)
			if err != nil {
				return err
			}
			var digest [48]byte
			switch tee {
			case attestation.TEESNP:
				digest, err = measureSNP(c, in)
			case attestation.TEETDX:
				digest, err = measureTDX(c, in)
			case attestation.TEESim:
				if in.kernel == "" {
					return errors.New("measure sim: give --kernel FILE or --guest DIR")
				}
				digest, err = sim.MeasureFiles(in.kernel, in.initrd, in.cmdline)
			default:
				return fmt.Errorf("--tee %q: want snp, tdx or sim", tee)
			}
			if err != nil {
				return err
			}
			return measurePrint(c, tee, digest)
		},
	}
}

// measureBoot is the direct-boot input: file paths ("" for none) and the
// command line.
type measureBoot struct {
	kernel, initrd, cmdline string
}

// measureInputs resolves --guest or --kernel/--initrd/--append.
func measureInputs(c *cli.Context, tee attestation.TEE) (measureBoot, error) {
	var in measureBoot
	if dir := c.String("guest"); dir != "" {
		if c.IsSet("kernel") || c.IsSet("initrd") {
			return in, errors.New("give --guest DIR or --kernel/--initrd, not both")
		}
		m, err := build.ReadManifest(dir)
		if err != nil {
			return in, err
		}
		if err := m.Verify(); err != nil {
			return in, err
		}
		in = measureBoot{kernel: m.KernelPath(), initrd: m.InitrdPath(), cmdline: m.Cmdline}
		if c.IsSet("append") {
			in.cmdline = c.String("append")
		}
		return in, nil
	}
	in = measureBoot{kernel: c.String("kernel"), initrd: c.String("initrd"), cmdline: c.String("append")}
	if in.kernel == "" && (c.IsSet("initrd") || c.IsSet("append")) {
		return in, fmt.Errorf("measure %s: --initrd and --append need --kernel (QEMU measures them only for a direct kernel boot)", tee)
	}
	return in, nil
}

// measureReadFirmware reads and parses the firmware named by flag.
func measureReadFirmware(c *cli.Context, flag string) (*ovmf.Image, error) {
	path := c.String(flag)
	if path == "" {
		return nil, fmt.Errorf("--%s FILE is required for --tee %s", flag, c.String("tee"))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read --%s: %w", flag, err)
	}
	img, err := ovmf.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("--%s %s: %w", flag, path, err)
	}
	return img, nil
}

// measureParseHex parses a hex number with an optional 0x prefix.
func measureParseHex(flag, s string, bits int) (uint64, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(s), "0x"), 16, bits)
	if err != nil {
		return 0, fmt.Errorf("--%s %q: want a hexadecimal number of at most %d bits, such as 0x21", flag, s, bits)
	}
	return v, nil
}

func measureSNP(c *cli.Context, in measureBoot) ([48]byte, error) {
	var zero [48]byte
	opts := measuresnp.Options{VCPUs: c.Int("vcpus"), VMM: measuresnp.VMM(c.String("vmm"))}
	if opts.VCPUs < 1 {
		return zero, fmt.Errorf("--vcpus %d: want the guest's vCPU count, at least 1", opts.VCPUs)
	}
	if opts.VMM != measuresnp.VMMQEMU {
		return zero, fmt.Errorf("--vmm %q: only %q is supported", opts.VMM, measuresnp.VMMQEMU)
	}
	switch {
	case c.IsSet("vcpu-type") && c.IsSet("vcpu-sig"):
		return zero, errors.New("give --vcpu-type or --vcpu-sig, not both")
	case c.IsSet("vcpu-type"):
		sig, err := measuresnp.LookupCPU(c.String("vcpu-type"))
		if err != nil {
			return zero, err
		}
		opts.Signature = sig
	case c.IsSet("vcpu-sig"):
		sig, err := measureParseHex("vcpu-sig", c.String("vcpu-sig"), 32)
		if err != nil {
			return zero, err
		}
		opts.Signature = uint32(sig)
	default:
		return zero, errors.New("give the vCPU type: --vcpu-type NAME (e.g. EPYC-Milan) or --vcpu-sig HEX")
	}
	gf, err := measureParseHex("guest-features", c.String("guest-features"), 64)
	if err != nil {
		return zero, err
	}
	opts.GuestFeatures = gf
	if s := c.String("ovmf-hash"); s != "" {
		b, err := hex.DecodeString(strings.TrimPrefix(strings.ToLower(s), "0x"))
		if err != nil || len(b) != measuresnp.DigestSize {
			return zero, fmt.Errorf("--ovmf-hash %q: want %d hex characters (the SHA-384 launch digest after the OVMF pages)", s, 2*measuresnp.DigestSize)
		}
		h := [measuresnp.DigestSize]byte(b)
		opts.OVMFHash = &h
	}
	img, err := measureReadFirmware(c, "ovmf")
	if err != nil {
		return zero, err
	}
	if in.kernel != "" {
		h, err := measuresnp.HashKernelFiles(in.kernel, in.initrd, in.cmdline)
		if err != nil {
			return zero, err
		}
		opts.Kernel = &h
	}
	return measuresnp.Measure(img, opts)
}

func measureTDX(c *cli.Context, in measureBoot) ([48]byte, error) {
	var order measuretdx.PageOrder
	switch o := c.String("tdx-page-order"); o {
	case "single-pass":
		order = measuretdx.SinglePass
	case "two-pass":
		order = measuretdx.TwoPass
	default:
		return [48]byte{}, fmt.Errorf("--tdx-page-order %q: want single-pass or two-pass", o)
	}
	img, err := measureReadFirmware(c, "tdvf")
	if err != nil {
		return [48]byte{}, err
	}
	if in.kernel != "" {
		fmt.Fprintln(c.App.ErrWriter, "ccctl: note: MRTD covers the TDVF only; the kernel, initrd and cmdline go into RTMR[1] and RTMR[2], which ccctl does not compute (docs/measurement.md)")
	}
	return measuretdx.MRTD(img, order)
}

// measurePrint writes the digest as the last stdout line, or the JSON entry.
func measurePrint(c *cli.Context, tee attestation.TEE, digest [48]byte) error {
	h := hex.EncodeToString(digest[:])
	if !c.Bool("json") {
		_, err := fmt.Fprintln(c.App.Writer, h)
		return err
	}
	b, err := json.Marshal(refvalues.Entry{TEE: string(tee), Measurement: h})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.App.Writer, string(b))
	return err
}
