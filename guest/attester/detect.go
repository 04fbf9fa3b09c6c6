package attester

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cofferhq/coffer/attestation/sim"
	"github.com/google/go-configfs-tsm/configfs/configfsi"
	sevclient "github.com/google/go-sev-guest/client"
	tdxclient "github.com/google/go-tdx-guest/client"
)

// ErrNoTEE is wrapped by Detect when the guest has no TEE interface.
var ErrNoTEE = errors.New("no TEE attestation interface found")

// Options tell Detect where to look. The zero value looks at the real
// Linux paths.
type Options struct {
	// FWCfgRoot is the fw_cfg by_name directory; "" means DefaultFWCfgRoot.
	FWCfgRoot string
	// TSM is the configfs-tsm client; nil means the kernel's at
	// TSMReportDir when present.
	TSM configfsi.Client
	// NoTSM skips configfs-tsm entirely (the TSM field and the kernel's).
	NoTSM bool
	// SEVGuestDevice and TDXGuestDevice are the device paths; "" means
	// DefaultSEVGuestDevice and DefaultTDXGuestDevice.
	SEVGuestDevice, TDXGuestDevice string
	// OpenSEVDevice and OpenTDXDevice open those devices; nil means the
	// Linux ioctl devices of go-sev-guest and go-tdx-guest.
	OpenSEVDevice func(path string) (sevclient.Device, error)
	OpenTDXDevice func(path string) (tdxclient.Device, error)
}

// Detect returns the attester for the TEE this guest runs in, checking in
// order: configfs-tsm (provider sev_guest → SNP, tdx_guest → TDX), the
// sev-guest device, the tdx_guest device, and only then the sim fw_cfg
// item (sim.FWCfgIdentity under FWCfgRoot). Real hardware comes first so a
// host cannot make a real SNP or TDX guest attest as sim by adding fw_cfg
// items (a KBS would refuse sim evidence anyway unless it trusts the sim
// root, but the guest would otherwise accept host-chosen init-data). It fails with an error wrapping ErrNoTEE
// that names every place it looked and why each was unusable, or with
// NewSim's error when the sim items exist but are malformed.
func Detect(o Options) (Attester, error) {
	root := o.FWCfgRoot
	if root == "" {
		root = DefaultFWCfgRoot
	}
	var why []string
	if !o.NoTSM {
		tsm, err := o.TSM, error(nil)
		if tsm == nil {
			tsm, err = linuxTSM()
		}
		if err == nil {
			var p string
			p, err = tsmProvider(tsm)
			switch {
			case err != nil:
			case p == providerSNP:
				return NewSNP(tsm, o.SEVGuestDevice, o.OpenSEVDevice), nil
			case p == providerTDX:
				return NewTDX(tsm, o.TDXGuestDevice, o.OpenTDXDevice), nil
			default:
				err = fmt.Errorf("configfs-tsm provider %q is neither %s nor %s", p, providerSNP, providerTDX)
			}
		}
		why = append(why, err.Error())
	}
	snp := NewSNP(nil, o.SEVGuestDevice, o.OpenSEVDevice)
	if _, err := os.Stat(snp.device); err == nil {
		return snp, nil
	} else {
		why = append(why, fmt.Sprintf("snp: %v", err))
	}
	tdx := NewTDX(nil, o.TDXGuestDevice, o.OpenTDXDevice)
	if _, err := os.Stat(tdx.device); err == nil {
		return tdx, nil
	} else {
		why = append(why, fmt.Sprintf("tdx: %v", err))
	}
	simPath := fwCfgPath(root, sim.FWCfgIdentity)
	if _, err := os.Stat(simPath); err == nil {
		return NewSim(root)
	} else {
		why = append(why, fmt.Sprintf("sim: %v", err))
	}
	return nil, fmt.Errorf("detect TEE: %w: looked for %s: a sim VM needs the qemu_fw_cfg module; SNP and TDX need configfs mounted at /sys/kernel/config or the sev-guest / tdx-guest driver", ErrNoTEE, strings.Join(why, "; "))
}
