package transport

import (
	"bufio"
	"io"
	"strconv"
	"strings"
	"time"
)

// protocolVersion is the version of the virtio-serial line protocol (see
// the package documentation) and of what follows it.
const protocolVersion = 1

// Markers of the virtio-serial handshake lines. Each line is a marker, the
// decimal protocol version and "\n".
const (
	markHostHello  = "COFFER-HOST-HELLO "
	markAgentHello = "COFFER-AGENT-HELLO "
	markHostAck    = "COFFER-HOST-ACK "
	markAgentSync  = "COFFER-AGENT-SYNC "
)

// helloInterval is how often the guest repeats its HELLO until it reads the
// host's ACK, and how often it polls a port whose host is absent.
const helloInterval = 100 * time.Millisecond

// handshakeLine returns the line for marker at this side's version.
func handshakeLine(marker string) []byte {
	return []byte(marker + strconv.Itoa(protocolVersion) + "\n")
}

// maxLineTail is how many bytes of a line lineReader keeps (bytes). Markers
// are recognised at the end of a line, so a line longer than this (junk,
// or yamux frames of an earlier session) only needs its tail.
const maxLineTail = 128

// lineReader splits a byte stream into '\n'-terminated lines for the
// handshake. It reads through a bufio.Reader, which the caller later hands
// to yamux so that no byte after the handshake is lost.
type lineReader struct {
	br    *bufio.Reader
	tail  []byte // unfinished line, at most maxLineTail bytes
	total int64  // bytes read so far
}

func newLineReader(br *bufio.Reader) *lineReader {
	return &lineReader{br: br, tail: make([]byte, 0, 2*maxLineTail)}
}

// next returns the last maxLineTail bytes of the next line, without the
// '\n'. On a read error it keeps the unfinished line, so a later call
// continues it (the guest's port returns io.EOF while no host is connected
// and works again once one connects).
func (r *lineReader) next() (string, error) {
	for {
		frag, err := r.br.ReadSlice('\n')
		r.total += int64(len(frag))
		r.tail = append(r.tail, frag...)
		if len(r.tail) > maxLineTail {
			n := copy(r.tail, r.tail[len(r.tail)-maxLineTail:])
			r.tail = r.tail[:n]
		}
		switch err {
		case nil:
			line := string(r.tail[:len(r.tail)-1])
			r.tail = r.tail[:0]
			return line, nil
		case bufio.ErrBufferFull:
			continue
		default:
			return "", err
		}
	}
}

// versionAfter reports whether line ends with marker followed by a
// version, and returns that version (at most 16 bytes of it, for error
// messages).
func versionAfter(line, marker string) (string, bool) {
	i := strings.LastIndex(line, marker)
	if i < 0 {
		return "", false
	}
	v := line[i+len(marker):]
	if len(v) > 16 {
		v = v[:16]
	}
	return v, true
}

// isOurVersion reports whether a version read from the peer is ours.
func isOurVersion(v string) bool {
	return v == strconv.Itoa(protocolVersion)
}

// bufferedPort is a port whose reads go through the handshake's
// bufio.Reader, so bytes it already buffered reach yamux.
type bufferedPort struct {
	io.Reader
	io.Writer
	io.Closer
}
