package sysinit

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// Kernel command-line keys Coffer reads. Every other "cc." key is an error;
// keys without the prefix belong to the kernel and are ignored.
const (
	// KeyNet is cc.net=ADDRESS/PREFIX[,GATEWAY[,DNS]][,KEY=VALUE]..., for
	// example cc.net=10.0.2.15/24,10.0.2.2,10.0.2.3 (IPv4 or IPv6; GATEWAY
	// must lie inside ADDRESS/PREFIX). The optional KEY=VALUE fields (mac=,
	// mtu=, addr=, route=, dns=, search=) are described on ParseNetConfig.
	// The fw_cfg item FWCfgNet, when present, replaces it.
	KeyNet = "cc.net"
	// KeyTransport is cc.transport=virtio-serial[:PORTNAME] or
	// cc.transport=vsock[:PORT], the channel the agent serves its API on.
	KeyTransport = "cc.transport"
	// KeyDebug is cc.debug, cc.debug=1|0|true|false|on|off.
	KeyDebug = "cc.debug"
)

const (
	// DefaultVirtioSerialPort is the virtio-serial port name used when
	// cc.transport=virtio-serial names none (QEMU: virtserialport,name=agent.0).
	DefaultVirtioSerialPort = "agent.0"
	// DefaultVsockPort is the vsock port used when cc.transport=vsock names none.
	DefaultVsockPort uint32 = 1024
)

// TransportKind names an agent transport.
type TransportKind string

const (
	// TransportVirtioSerial is a virtio-serial port, /dev/vportNpM in the guest.
	TransportVirtioSerial TransportKind = "virtio-serial"
	// TransportVsock is an AF_VSOCK listening port.
	TransportVsock TransportKind = "vsock"
)

// Transport is the parsed cc.transport key. The zero value means the key was
// absent.
type Transport struct {
	// Kind is the transport; "" when cc.transport is absent.
	Kind TransportKind
	// PortName is the virtio-serial port name (TransportVirtioSerial only).
	PortName string
	// Port is the vsock port (TransportVsock only), 1 to 4294967294.
	Port uint32
}

// String formats t the way cc.transport spells it.
func (t Transport) String() string {
	switch t.Kind {
	case TransportVirtioSerial:
		return string(t.Kind) + ":" + t.PortName
	case TransportVsock:
		return string(t.Kind) + ":" + strconv.FormatUint(uint64(t.Port), 10)
	}
	return ""
}

// Cmdline holds the cc.* keys of the kernel command line.
type Cmdline struct {
	// Net is nil when cc.net is absent: the guest then gets only lo.
	Net *NetConfig
	// Transport is the zero Transport when cc.transport is absent.
	Transport Transport
	// Debug is true when cc.debug is present without a value or with a true
	// value.
	Debug bool
}

// ParseCmdline parses the cc.* keys of a kernel command line as found in
// /proc/cmdline: space-separated words, each "key" or "key=value", where a
// double-quoted stretch may contain spaces (the kernel's own parse_args rules).
// It returns an error wrapping errdefs.ErrInvalidArgument naming every unknown
// cc.* key, a repeated key, or a malformed value with the value found and the
// form wanted.
func ParseCmdline(s string) (Cmdline, error) {
	var c Cmdline
	seen := map[string]bool{}
	var unknown []string
	for _, word := range splitCmdline(s) {
		key, val, hasVal := strings.Cut(word, "=")
		if !strings.HasPrefix(key, "cc.") {
			continue
		}
		if seen[key] {
			return Cmdline{}, fmt.Errorf("parse kernel command line: key %s appears more than once: %w", key, errdefs.ErrInvalidArgument)
		}
		seen[key] = true
		var err error
		switch key {
		case KeyNet:
			c.Net, err = ParseNetConfig(val)
		case KeyTransport:
			c.Transport, err = parseTransport(val)
		case KeyDebug:
			c.Debug, err = parseDebug(val, hasVal)
		default:
			unknown = append(unknown, key)
		}
		if err != nil {
			return Cmdline{}, fmt.Errorf("parse kernel command line: %s=%q: %w: %w", key, val, err, errdefs.ErrInvalidArgument)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return Cmdline{}, fmt.Errorf("parse kernel command line: unknown keys %s (known: %s, %s, %s): %w",
			strings.Join(unknown, ", "), KeyNet, KeyTransport, KeyDebug, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

// splitCmdline splits at spaces outside double quotes and drops the quotes.
func splitCmdline(s string) []string {
	var words []string
	var cur strings.Builder
	inQuote, inWord := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			inWord = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

func parseTransport(v string) (Transport, error) {
	kind, arg, hasArg := strings.Cut(v, ":")
	switch TransportKind(kind) {
	case TransportVirtioSerial:
		t := Transport{Kind: TransportVirtioSerial, PortName: DefaultVirtioSerialPort}
		if hasArg {
			if arg == "" || strings.ContainsAny(arg, "/ ") {
				return Transport{}, fmt.Errorf("virtio-serial port name %q is empty or has '/' or ' '", arg)
			}
			t.PortName = arg
		}
		return t, nil
	case TransportVsock:
		t := Transport{Kind: TransportVsock, Port: DefaultVsockPort}
		if hasArg {
			p, err := strconv.ParseUint(arg, 10, 32)
			if err != nil || p == 0 || p == 0xFFFFFFFF {
				return Transport{}, fmt.Errorf("vsock port %q: want a number from 1 to 4294967294", arg)
			}
			t.Port = uint32(p)
		}
		return t, nil
	}
	return Transport{}, fmt.Errorf("want %s[:PORTNAME] or %s[:PORT]", TransportVirtioSerial, TransportVsock)
}

func parseDebug(v string, hasVal bool) (bool, error) {
	if !hasVal {
		return true, nil
	}
	switch strings.ToLower(v) {
	case "1", "true", "on", "yes":
		return true, nil
	case "0", "false", "off", "no":
		return false, nil
	}
	return false, errors.New("want 1, 0, true, false, on or off")
}
