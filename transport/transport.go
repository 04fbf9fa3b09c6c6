package transport

import (
	"context"
	"fmt"
	"net"
	"os"
)

// Kind names a transport between the shim and the agent.
type Kind string

const (
	// KindVsock is AF_VSOCK through QEMU's vhost-vsock-pci device.
	KindVsock Kind = "vsock"
	// KindVirtioSerial is a QEMU virtserialport multiplexed with yamux.
	KindVirtioSerial Kind = "virtio-serial"
	// KindAuto picks KindVsock when the host can use it, else
	// KindVirtioSerial (see Resolve).
	KindAuto Kind = "auto"
)

// DefaultVsockPort is the AF_VSOCK port cc-agent listens on in the guest.
const DefaultVsockPort uint32 = 1024

// VirtioSerialPortName is the name of the QEMU virtserialport
// (-device virtserialport,name=agent.0) that carries the agent connection;
// the guest finds it as /sys/class/virtio-ports/<vportNpM>/name.
const VirtioSerialPortName = "agent.0"

// vhostVsockDevice is the host device QEMU's vhost-vsock-pci needs.
const vhostVsockDevice = "/dev/vhost-vsock"

// ParseKind checks a configured transport name. The empty string means
// KindAuto. It returns an error naming the value and the accepted values
// when s is none of "vsock", "virtio-serial" or "auto".
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case "":
		return KindAuto, nil
	case KindVsock, KindVirtioSerial, KindAuto:
		return k, nil
	default:
		return "", fmt.Errorf("parse transport kind: %q is not a transport, want %q, %q or %q",
			s, KindVsock, KindVirtioSerial, KindAuto)
	}
}

// Resolve turns KindAuto (or "") into a concrete kind for the host side:
// KindVsock when /dev/vhost-vsock exists, otherwise KindVirtioSerial. Any
// other kind is returned unchanged.
func Resolve(k Kind) Kind {
	return resolve(k, vhostVsockDevice)
}

func resolve(k Kind, vhostDevice string) Kind {
	if k != KindAuto && k != "" {
		return k
	}
	if _, err := os.Stat(vhostDevice); err == nil {
		return KindVsock
	}
	return KindVirtioSerial
}

// Dialer opens connections from the host to the agent over one transport.
// It is safe for concurrent use.
type Dialer interface {
	// Dial opens a new connection to the agent: a yamux stream for
	// virtio-serial, a new AF_VSOCK connection for vsock. The returned
	// connection supports CloseWrite() error, which half-closes it: the
	// agent's reads see io.EOF while the agent can still write back.
	Dial(ctx context.Context) (net.Conn, error)
	// Close ends the transport. Connections already dialed over
	// virtio-serial end with it; vsock connections stay open.
	Close() error
}
