// Package transport carries the connections between the shim (host) and
// cc-agent (guest).
//
// Every logical connection (the ttrpc Agent channel and one connection per
// stdio stream) is its own net.Conn. The first byte of each connection is
// written by the host and says what it carries (see
// api/agent/v1/stream.go); this package does not look at it.
//
// Two transports exist:
//
//   - vsock (AF_VSOCK, QEMU -device vhost-vsock-pci,guest-cid=N): every
//     Dial is a new vsock connection to the agent's port (DefaultVsockPort).
//     The host needs /dev/vhost-vsock.
//   - virtio-serial (QEMU -device virtserialport,name=agent.0 backed by
//     -chardev socket,server=on,wait=off): one byte pipe between the host's
//     unix socket and the guest's /dev/vportNpM, multiplexed with
//     github.com/hashicorp/yamux. Every Dial opens a yamux stream.
//
// # virtio-serial handshake
//
// The guest may open its port before or after the host connects to QEMU's
// socket, and bytes written while the other side is absent may be lost or
// belong to an earlier session. Both sides therefore agree on where the
// yamux byte stream starts with a line protocol (version 1, ASCII, one
// line each):
//
//	host  -> guest  "COFFER-HOST-HELLO 1\n"  once, on connect (a kick, see below)
//	guest -> host   "COFFER-AGENT-HELLO 1\n" every 100 ms until the guest reads an ACK
//	host  -> guest  "COFFER-HOST-ACK 1\n"    once, after the first HELLO
//	guest -> host   "COFFER-AGENT-SYNC 1\n"  once, after the guest stopped sending HELLOs
//
// After SYNC the guest runs a yamux server and the host a yamux client. The
// host ignores everything before the HELLO and between ACK and SYNC (late
// HELLOs, stale yamux frames of an earlier session); the guest ignores every
// line that is not an ACK. A marker is recognised at the end of a line even
// when junk without a newline precedes it.
//
// The host's HELLO kick is an extension to the three-line exchange: when a
// new host connects while the guest still runs a stale yamux session (it
// has not yet noticed that the previous host went away), the kick is not a
// valid yamux frame header, so the guest's session fails at once and the
// guest redoes the handshake, instead of waiting for a keepalive timeout.
//
// When the yamux session dies (the host went away), the guest re-opens the
// port and waits for the next host; its net.Listener keeps working across
// sessions until Close.
package transport
