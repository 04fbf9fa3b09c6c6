// Package forward carries guest connections to host endpoints over the
// agent transport, so that network.forwards works without any guest
// network (network.mode = "none", and Cloud Hypervisor, which has no
// user-mode network).
//
// The guest opens a connection toward the host on the agent transport (a
// yamux stream on virtio-serial; an AF_VSOCK connection to the host, CID 2,
// on vsock and Cloud Hypervisor's hybrid vsock) and writes a Header naming
// the forward by its index in the shim's network.forwards. The shim reads
// the header, dials that configured endpoint over TCP, answers with a
// Reply, and then copies bytes both ways until either side closes. The
// shim dials only endpoints from its own config: the guest chooses an
// index, never an address.
//
// # Wire format (version 1)
//
// Header, guest to host:
//
//	byte 0     'F' (HeaderMagic)
//	byte 1     version (1)
//	bytes 2-3  body length n, big-endian, at most MaxHeaderBody
//	n bytes    body; version 1: the forward index, 2 bytes big-endian.
//	           Bytes after the fields a version defines are ignored, so a
//	           later minor extension stays readable.
//
// Reply, host to guest:
//
//	byte 0     status (StatusOK, StatusRefused, StatusDialFailed)
//	bytes 1-2  message length m, big-endian, at most MaxReplyMessage
//	m bytes    UTF-8 message: why the forward was refused or failed
//
// After StatusOK the connection is the endpoint's byte stream; after any
// other status the host closes it.
//
// # Dial-rewrite addresses
//
// The guest learns which host addresses are forwarded from the existing
// dial-rewrite tables (RegistryConfig.endpoints, InitSandboxRequest
// .endpoints): a host address maps to Address(i), "agent-forward/<i>",
// instead of a guest "ip:port". Dialer turns such an address into a
// forwarded connection and dials any other address over TCP.
package forward
