package forward

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// HeaderMagic is the first byte of a Header. It is not one of the host's
// channel bytes ('R', 'S'), so a forward header is never mistaken for an
// agent connection and the reverse.
const HeaderMagic byte = 'F'

// Version is the header version this package writes and reads.
const Version byte = 1

// MaxHeaderBody bounds a header's body (bytes). Version 1 uses 2; the
// rest is room for later fields, and anything longer is refused unread.
const MaxHeaderBody = 64

// MaxForwards is the number of forwards an index can name (0 to
// MaxForwards-1); the shim config allows at most this many
// network.forwards entries.
const MaxForwards = 100

// MaxReplyMessage bounds a reply's message (bytes).
const MaxReplyMessage = 512

// ErrBadHeader is wrapped by ReadHeader's errors for a header that is not
// a version 1 forward header: wrong magic byte, unknown version, a body
// over MaxHeaderBody or shorter than its fields.
var ErrBadHeader = errors.New("bad forward header")

// ErrUnknownForward is wrapped when a header names an index the shim has
// no forward for.
var ErrUnknownForward = errors.New("unknown forward")

// Header opens a forwarded connection: it names the forward the guest
// wants.
type Header struct {
	// Index is the forward's position in the shim's network.forwards,
	// from 0; below MaxForwards.
	Index uint16
}

// WriteHeader writes h in the version 1 format (see the package
// documentation). It fails for an index of MaxForwards or more, without
// writing anything.
func WriteHeader(w io.Writer, h Header) error {
	if h.Index >= MaxForwards {
		return fmt.Errorf("write forward header: index %d is out of range 0-%d: %w", h.Index, MaxForwards-1, ErrUnknownForward)
	}
	b := []byte{HeaderMagic, Version, 0, 2, 0, 0}
	binary.BigEndian.PutUint16(b[4:], h.Index)
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write forward header: %w", err)
	}
	return nil
}

// ReadHeader reads one header from r. Errors wrap ErrBadHeader and say
// which field was wrong (and, for a version mismatch, that the guest and
// the shim must come from the same release), ErrUnknownForward for an
// index of MaxForwards or more, or the read error (io.ErrUnexpectedEOF
// for a header cut short). It reads no byte past the header.
func ReadHeader(r io.Reader) (Header, error) {
	var pre [4]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return Header{}, fmt.Errorf("read forward header: %w", err)
	}
	if pre[0] != HeaderMagic {
		return Header{}, fmt.Errorf("read forward header: first byte is 0x%02x, want 0x%02x ('F'): %w", pre[0], HeaderMagic, ErrBadHeader)
	}
	if pre[1] != Version {
		return Header{}, fmt.Errorf("read forward header: version %d, this side speaks version %d; build the guest image and the shim from the same coffer release: %w", pre[1], Version, ErrBadHeader)
	}
	n := binary.BigEndian.Uint16(pre[2:])
	if n > MaxHeaderBody {
		return Header{}, fmt.Errorf("read forward header: body length %d exceeds the limit of %d bytes: %w", n, MaxHeaderBody, ErrBadHeader)
	}
	if n < 2 {
		return Header{}, fmt.Errorf("read forward header: body length %d is too short for the 2-byte forward index: %w", n, ErrBadHeader)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Header{}, fmt.Errorf("read forward header body: %w", err)
	}
	h := Header{Index: binary.BigEndian.Uint16(body)}
	if h.Index >= MaxForwards {
		return Header{}, fmt.Errorf("read forward header: index %d is out of range 0-%d: %w", h.Index, MaxForwards-1, ErrUnknownForward)
	}
	return h, nil
}

// Status is the first byte of a Reply.
type Status byte

const (
	// StatusOK: the host dialed the endpoint; the endpoint's bytes follow.
	StatusOK Status = 0
	// StatusRefused: the header was bad or named no configured forward.
	StatusRefused Status = 1
	// StatusDialFailed: the host could not connect to the endpoint.
	StatusDialFailed Status = 2
)

// String names the status ("ok", "refused", "dial failed").
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusRefused:
		return "refused"
	case StatusDialFailed:
		return "dial failed"
	default:
		return "status " + strconv.Itoa(int(s))
	}
}

// ErrRefused is wrapped by ReadReply's error for StatusRefused.
var ErrRefused = errors.New("the host refused the forward")

// ErrDialFailed is wrapped by ReadReply's error for StatusDialFailed.
var ErrDialFailed = errors.New("the host could not reach the forwarded endpoint")

// WriteReply writes a reply with status s and message msg, cut to
// MaxReplyMessage bytes.
func WriteReply(w io.Writer, s Status, msg string) error {
	if len(msg) > MaxReplyMessage {
		msg = strings.ToValidUTF8(msg[:MaxReplyMessage], "")
	}
	b := make([]byte, 3+len(msg))
	b[0] = byte(s)
	binary.BigEndian.PutUint16(b[1:3], uint16(len(msg)))
	copy(b[3:], msg)
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write forward reply: %w", err)
	}
	return nil
}

// ReadReply reads the host's reply. It returns nil for StatusOK; for
// StatusRefused and StatusDialFailed an error carrying the host's message
// and wrapping ErrRefused or ErrDialFailed; for an unknown status or a
// message over MaxReplyMessage an error wrapping ErrBadHeader; and the
// read error when the host closed the connection first (io.EOF: a shim
// too old to serve forwards, or one that is stopping).
func ReadReply(r io.Reader) error {
	var pre [3]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return fmt.Errorf("read forward reply: %w", err)
	}
	n := binary.BigEndian.Uint16(pre[1:])
	if n > MaxReplyMessage {
		return fmt.Errorf("read forward reply: message length %d exceeds the limit of %d bytes: %w", n, MaxReplyMessage, ErrBadHeader)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return fmt.Errorf("read forward reply message: %w", err)
	}
	switch s := Status(pre[0]); s {
	case StatusOK:
		return nil
	case StatusRefused:
		return fmt.Errorf("%w: %s", ErrRefused, msg)
	case StatusDialFailed:
		return fmt.Errorf("%w: %s", ErrDialFailed, msg)
	default:
		return fmt.Errorf("read forward reply: unknown %s (message %q): %w", s, msg, ErrBadHeader)
	}
}

// addressPrefix starts every forward address.
const addressPrefix = "agent-forward/"

// Address is the dial-rewrite value that stands for forward i
// ("agent-forward/<i>"). It is not a "host:port", so a guest that does not
// know forwards fails to dial it rather than dialing something else.
func Address(i int) string { return addressPrefix + strconv.Itoa(i) }

// ParseAddress reports whether addr is an Address and returns its index.
// An addr with the prefix but without a valid index (not decimal, or
// MaxForwards or more) is an error wrapping ErrUnknownForward; any other
// addr returns ok false and no error.
func ParseAddress(addr string) (index uint16, ok bool, err error) {
	s, found := strings.CutPrefix(addr, addressPrefix)
	if !found {
		return 0, false, nil
	}
	i, perr := strconv.ParseUint(s, 10, 16)
	if perr != nil || i >= MaxForwards || (len(s) > 1 && s[0] == '0') {
		return 0, false, fmt.Errorf("forward address %q: want %s<index> with an index 0-%d: %w", addr, addressPrefix, MaxForwards-1, ErrUnknownForward)
	}
	return uint16(i), true, nil
}
