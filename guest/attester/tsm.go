package attester

import (
	"fmt"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"
)

// TSMReportDir is the configfs-tsm report directory (Linux 6.7+,
// Documentation/ABI/testing/configfs-tsm); configfs must be mounted at
// /sys/kernel/config.
const TSMReportDir = configfsi.TsmPrefix + "/report"

// configfs-tsm provider names (the "provider" attribute, without newline).
const (
	providerSNP = "sev_guest"
	providerTDX = "tdx_guest"
)

// linuxTSM returns the kernel's configfs-tsm client, or an error naming
// TSMReportDir when the kernel or mount lacks it.
func linuxTSM() (configfsi.Client, error) {
	c, err := linuxtsm.MakeClient()
	if err != nil {
		return nil, fmt.Errorf("configfs-tsm %s: %w", TSMReportDir, err)
	}
	return c, nil
}

// tsmProvider creates a report entry and returns its provider name.
func tsmProvider(c configfsi.Client) (string, error) {
	r, err := report.CreateOpenReport(c)
	if err != nil {
		return "", fmt.Errorf("configfs-tsm %s: %w", TSMReportDir, err)
	}
	defer r.Destroy()
	p, err := r.ReadOption("provider")
	if err != nil {
		return "", fmt.Errorf("configfs-tsm %s: %w", TSMReportDir, err)
	}
	return strings.TrimSpace(string(p)), nil
}

// tsmReport gets a report for rd through configfs-tsm and checks that the
// provider is want. aux also reads the auxiliary blob (the SNP certificate
// table).
func tsmReport(c configfsi.Client, want string, rd [ReportDataSize]byte, aux bool) (*report.Response, error) {
	resp, err := report.Get(c, &report.Request{InBlob: rd[:], GetAuxBlob: aux})
	if err != nil {
		return nil, fmt.Errorf("configfs-tsm report: %w", err)
	}
	if got := strings.TrimSpace(resp.Provider); got != want {
		return nil, fmt.Errorf("configfs-tsm report: provider is %q, want %q: this guest runs on another TEE", got, want)
	}
	return resp, nil
}
