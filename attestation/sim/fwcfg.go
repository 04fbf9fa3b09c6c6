package sim

// Names of the fw_cfg items through which a sim VM hands its guest the
// simulated TEE (vmm sets them, guest/attester reads them at
// /sys/firmware/qemu_fw_cfg/by_name/<name>/raw).
const (
	// FWCfgIdentity is Reporter.MarshalPEM: the test-only VCEK certificate
	// and private key the guest signs its reports with.
	FWCfgIdentity = "opt/cc/sim-identity"
	// FWCfgMeasurement is the launch MEASUREMENT (LaunchMeasurement of the
	// booted kernel, initrd and cmdline), 96 lowercase hex digits.
	FWCfgMeasurement = "opt/cc/sim-measurement"
	// FWCfgHostData is HOST_DATA (the init-data digest fitted to 32 bytes,
	// or zeros), 64 lowercase hex digits.
	FWCfgHostData = "opt/cc/sim-host-data"
)
