package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"
)

// Channel is the first byte of every transport connection between the shim
// and the agent. It says what the rest of the connection carries.
type Channel byte

const (
	// ChannelRPC carries the ttrpc Agent service.
	ChannelRPC Channel = 'R'
	// ChannelStream carries one raw stdio stream. A length-prefixed
	// StreamHeader follows the channel byte (see WriteStreamHeader).
	ChannelStream Channel = 'S'
)

// MaxStreamHeaderBytes bounds an encoded StreamHeader (bytes). Container and
// exec IDs are at most a few hundred bytes, so anything larger is hostile.
const MaxStreamHeaderBytes = 4096

// WriteChannel writes the channel byte that opens a connection.
func WriteChannel(w io.Writer, c Channel) error {
	_, err := w.Write([]byte{byte(c)})
	return err
}

// ReadChannel reads the channel byte that opens a connection. It returns an
// error naming the byte when it is neither ChannelRPC nor ChannelStream.
func ReadChannel(r io.Reader) (Channel, error) {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, fmt.Errorf("read channel byte: %w", err)
	}
	switch c := Channel(b[0]); c {
	case ChannelRPC, ChannelStream:
		return c, nil
	default:
		return 0, fmt.Errorf("unknown channel byte 0x%02x: want 'R' (rpc) or 'S' (stream)", b[0])
	}
}

// WriteStreamHeader writes ChannelStream, then h as a 4-byte big-endian
// length followed by its protobuf encoding.
func WriteStreamHeader(w io.Writer, h *StreamHeader) error {
	b, err := proto.Marshal(h)
	if err != nil {
		return fmt.Errorf("encode stream header: %w", err)
	}
	if len(b) > MaxStreamHeaderBytes {
		return fmt.Errorf("stream header is %d bytes, limit %d", len(b), MaxStreamHeaderBytes)
	}
	buf := make([]byte, 1+4+len(b))
	buf[0] = byte(ChannelStream)
	binary.BigEndian.PutUint32(buf[1:5], uint32(len(b)))
	copy(buf[5:], b)
	_, err = w.Write(buf)
	return err
}

// ReadStreamHeader reads the length-prefixed StreamHeader that follows a
// ChannelStream byte. It rejects headers over MaxStreamHeaderBytes, headers
// without a container ID and unknown stream kinds.
func ReadStreamHeader(r io.Reader) (*StreamHeader, error) {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, fmt.Errorf("read stream header length: %w", err)
	}
	n := binary.BigEndian.Uint32(l[:])
	if n > MaxStreamHeaderBytes {
		return nil, fmt.Errorf("stream header length %d exceeds limit %d", n, MaxStreamHeaderBytes)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("read stream header: %w", err)
	}
	h := &StreamHeader{}
	if err := proto.Unmarshal(b, h); err != nil {
		return nil, fmt.Errorf("decode stream header: %w", err)
	}
	if h.GetContainerId() == "" {
		return nil, errors.New("stream header has no container_id")
	}
	switch h.GetKind() {
	case StreamKind_STREAM_KIND_STDIN, StreamKind_STREAM_KIND_STDOUT, StreamKind_STREAM_KIND_STDERR:
	default:
		return nil, fmt.Errorf("stream header has unknown kind %v", h.GetKind())
	}
	return h, nil
}
