package cloudhypervisor

// The types below are the parts of Cloud Hypervisor's REST API (OpenAPI 3.0
// document vmm/src/api/openapi/cloud-hypervisor.yaml, components/schemas)
// that Coffer sends or reads. Field names and JSON keys follow that schema;
// optional fields are omitted when zero so that Cloud Hypervisor applies its
// own defaults. Sizes are bytes unless a field says otherwise.

// VmmPingResponse is the body of GET /vmm.ping.
type VmmPingResponse struct {
	// Version is Cloud Hypervisor's version, for example "v48.0".
	Version string `json:"version"`
	// BuildVersion is the build's git description.
	BuildVersion string `json:"build_version,omitempty"`
	// PID is the VMM's process id.
	PID int64 `json:"pid,omitempty"`
	// Features lists the compile-time features ("kvm", "tdx", "sev_snp",
	// "igvm", ...).
	Features []string `json:"features,omitempty"`
}

// VmConfig is the body of PUT /vm.create (schema VmConfig). Payload is the
// only required member.
type VmConfig struct {
	// CPUs sizes the vCPUs; nil means Cloud Hypervisor's default (1).
	CPUs *CpusConfig `json:"cpus,omitempty"`
	// Memory sizes guest RAM; nil means Cloud Hypervisor's default (512 MiB).
	Memory *MemoryConfig `json:"memory,omitempty"`
	// Payload is what the guest boots. Required.
	Payload PayloadConfig `json:"payload"`
	// Net lists the virtio-net devices.
	Net []NetConfig `json:"net,omitempty"`
	// Serial is the legacy 8250 port (the guest's ttyS0).
	Serial *ConsoleConfig `json:"serial,omitempty"`
	// Console is the virtio-console (the guest's hvc0).
	Console *ConsoleConfig `json:"console,omitempty"`
	// Vsock is the virtio-vsock device; nil means none.
	Vsock *VsockConfig `json:"vsock,omitempty"`
	// Platform selects TDX or SEV-SNP; nil means a plain VM.
	Platform *PlatformConfig `json:"platform,omitempty"`
}

// PayloadConfig is what the guest boots (schema PayloadConfig). Paths are
// host paths Cloud Hypervisor opens.
type PayloadConfig struct {
	// Firmware is a firmware image: TDVF or TD-Shim for TDX, or
	// hypervisor-fw / CLOUDHV for a plain VM.
	Firmware string `json:"firmware,omitempty"`
	// Kernel is the guest kernel.
	Kernel string `json:"kernel,omitempty"`
	// Cmdline is the guest kernel command line.
	Cmdline string `json:"cmdline,omitempty"`
	// Initramfs is the guest initramfs.
	Initramfs string `json:"initramfs,omitempty"`
	// IGVM is an IGVM image (SEV-SNP); Cloud Hypervisor refuses it
	// together with Firmware.
	IGVM string `json:"igvm,omitempty"`
	// HostData is the SEV-SNP HOST_DATA, 32 bytes as 64 hex digits.
	HostData string `json:"host_data,omitempty"`
}

// CpusConfig sizes the vCPUs (schema CpusConfig).
type CpusConfig struct {
	// BootVCPUs is the number of vCPUs at boot, at least 1.
	BootVCPUs int `json:"boot_vcpus"`
	// MaxVCPUs is the hot-plug ceiling, at least BootVCPUs; TDX refuses
	// CPU hot-plug, so Coffer sets it equal to BootVCPUs.
	MaxVCPUs int `json:"max_vcpus"`
}

// MemoryConfig sizes guest RAM (schema MemoryConfig).
type MemoryConfig struct {
	// Size is the guest RAM, bytes.
	Size int64 `json:"size"`
	// Shared maps guest RAM MAP_SHARED, which vhost-user devices such as
	// virtio-fs need.
	Shared bool `json:"shared,omitempty"`
}

// ConsoleMode says where a console or serial port goes (schema ConsoleMode).
type ConsoleMode string

// Console modes Coffer uses.
const (
	// ConsoleOff removes the device.
	ConsoleOff ConsoleMode = "Off"
	// ConsoleFile appends the output to ConsoleConfig.File.
	ConsoleFile ConsoleMode = "File"
	// ConsoleNull keeps the device and drops its output.
	ConsoleNull ConsoleMode = "Null"
)

// ConsoleConfig is the virtio-console or the legacy serial port (ttyS0)
// (schemas ConsoleConfig and SerialConfig, which share these fields).
type ConsoleConfig struct {
	// Mode is where the output goes.
	Mode ConsoleMode `json:"mode"`
	// File is the output file; only for ConsoleFile.
	File string `json:"file,omitempty"`
}

// NetConfig is one virtio-net device backed by a tap (schema NetConfig),
// in vm.create's net list or as the body of PUT /vm.add-net.
type NetConfig struct {
	// Tap is the host tap device's name; Cloud Hypervisor opens it in its
	// own network namespace, or creates it when it does not exist (that
	// needs CAP_NET_ADMIN). Empty when the tap is passed as open file
	// descriptors with vm.add-net (Client.AddNet).
	Tap string `json:"tap,omitempty"`
	// MAC is the guest NIC's MAC address; empty means a random one.
	MAC string `json:"mac,omitempty"`
	// MTU is the link MTU, bytes; 0 means the tap's.
	MTU int `json:"mtu,omitempty"`
	// NumQueues is the number of virtqueues, two (receive and transmit)
	// per tap queue; 0 means Cloud Hypervisor's default, 2. With tap file
	// descriptors it must be twice their number.
	NumQueues int `json:"num_queues,omitempty"`
}

// VsockConfig is the guest's virtio-vsock device, proxied to a host unix
// socket (schema VsockConfig).
type VsockConfig struct {
	// CID is the guest's context id, at least 3.
	CID int64 `json:"cid"`
	// Socket is the host unix socket; host-initiated connections use the
	// hybrid vsock "CONNECT <port>" protocol on it.
	Socket string `json:"socket"`
}

// PlatformConfig selects the confidential-computing platform (schema
// PlatformConfig). At most one of TDX and SEVSNP may be set.
type PlatformConfig struct {
	// TDX launches an Intel TDX trust domain; needs Payload.Firmware.
	TDX bool `json:"tdx,omitempty"`
	// SEVSNP launches an AMD SEV-SNP guest; needs Payload.IGVM.
	SEVSNP bool `json:"sev_snp,omitempty"`
}

// VmState is a VM's state in VmInfo (schema VmState).
type VmState string

// VM states.
const (
	// VmCreated: vm.create succeeded, vm.boot not yet called.
	VmCreated VmState = "Created"
	// VmRunning: the guest runs.
	VmRunning VmState = "Running"
	// VmShutdown: the guest was shut down (vm.shutdown or a guest poweroff).
	VmShutdown VmState = "Shutdown"
	// VmPaused: vm.pause stopped the vCPUs.
	VmPaused VmState = "Paused"
	// VmBreakPoint: a gdb breakpoint stopped the guest.
	VmBreakPoint VmState = "BreakPoint"
)

// VmInfo is the body of GET /vm.info (schema VmInfo). Config is the
// configuration as Cloud Hypervisor completed it with its defaults; fields
// Coffer does not model are dropped.
type VmInfo struct {
	// Config is the VM's configuration.
	Config VmConfig `json:"config"`
	// State is the VM's state.
	State VmState `json:"state"`
	// MemoryActualSize is the guest RAM in use, bytes.
	MemoryActualSize int64 `json:"memory_actual_size,omitempty"`
}
