package forward

import (
	"bytes"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, i := range []uint16{0, 1, 42, MaxForwards - 1} {
		var b bytes.Buffer
		require.NoError(t, WriteHeader(&b, Header{Index: i}))
		require.Equal(t, []byte{'F', 1, 0, 2, byte(i >> 8), byte(i)}, b.Bytes())
		b.WriteString("payload")
		h, err := ReadHeader(&b)
		require.NoError(t, err)
		require.Equal(t, i, h.Index)
		rest, _ := io.ReadAll(&b)
		require.Equal(t, "payload", string(rest), "ReadHeader must not read past the header")
	}
}

func TestWriteHeaderRefusesOutOfRangeIndex(t *testing.T) {
	var b bytes.Buffer
	err := WriteHeader(&b, Header{Index: MaxForwards})
	require.ErrorIs(t, err, ErrUnknownForward)
	require.ErrorContains(t, err, "index 100 is out of range 0-99")
	require.Zero(t, b.Len(), "nothing written")
}

func TestReadHeaderErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		is      error
		message string
	}{
		{"channel byte of an agent connection", []byte{'R', 1, 0, 2, 0, 0}, ErrBadHeader, "first byte is 0x52, want 0x46 ('F')"},
		{"unknown version", []byte{'F', 2, 0, 2, 0, 0}, ErrBadHeader, "version 2, this side speaks version 1; build the guest image and the shim from the same coffer release"},
		{"oversize body", []byte{'F', 1, 0x10, 0x00}, ErrBadHeader, "body length 4096 exceeds the limit of 64 bytes"},
		{"body too short", []byte{'F', 1, 0, 1, 7}, ErrBadHeader, "body length 1 is too short for the 2-byte forward index"},
		{"index out of range", []byte{'F', 1, 0, 2, 0xff, 0xff}, ErrUnknownForward, "index 65535 is out of range 0-99"},
		{"truncated prefix", []byte{'F', 1}, io.ErrUnexpectedEOF, "read forward header"},
		{"truncated body", []byte{'F', 1, 0, 2, 0}, io.ErrUnexpectedEOF, "read forward header body"},
		{"empty", nil, io.EOF, "read forward header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadHeader(bytes.NewReader(tc.in))
			require.ErrorIs(t, err, tc.is)
			require.ErrorContains(t, err, tc.message)
		})
	}
}

func TestReadHeaderIgnoresLaterFields(t *testing.T) {
	in := []byte{'F', 1, 0, 5, 0, 3, 'x', 'y', 'z', 'P'}
	r := bytes.NewReader(in)
	h, err := ReadHeader(r)
	require.NoError(t, err)
	require.Equal(t, uint16(3), h.Index)
	rest, _ := io.ReadAll(r)
	require.Equal(t, "P", string(rest))
}

func TestReplyRoundTrip(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, WriteReply(&b, StatusOK, ""))
	require.Equal(t, []byte{0, 0, 0}, b.Bytes())
	require.NoError(t, ReadReply(&b))

	require.NoError(t, WriteReply(&b, StatusRefused, "forward 7 is not configured"))
	err := ReadReply(&b)
	require.ErrorIs(t, err, ErrRefused)
	require.EqualError(t, err, "the host refused the forward: forward 7 is not configured")

	require.NoError(t, WriteReply(&b, StatusDialFailed, "connection refused"))
	err = ReadReply(&b)
	require.ErrorIs(t, err, ErrDialFailed)
	require.ErrorContains(t, err, "connection refused")

	long := bytes.Repeat([]byte("é"), MaxReplyMessage)
	require.NoError(t, WriteReply(&b, StatusRefused, string(long)))
	require.LessOrEqual(t, b.Len(), 3+MaxReplyMessage, "message cut to the limit")
	err = ReadReply(&b)
	require.ErrorIs(t, err, ErrRefused)
}

func TestReadReplyErrors(t *testing.T) {
	err := ReadReply(bytes.NewReader([]byte{9, 0, 2, 'h', 'i'}))
	require.ErrorIs(t, err, ErrBadHeader)
	require.ErrorContains(t, err, `unknown status 9 (message "hi")`)

	err = ReadReply(bytes.NewReader([]byte{1, 0xff, 0xff}))
	require.ErrorIs(t, err, ErrBadHeader)
	require.ErrorContains(t, err, "message length 65535 exceeds the limit of 512 bytes")

	err = ReadReply(bytes.NewReader(nil))
	require.ErrorIs(t, err, io.EOF)
}

func TestAddress(t *testing.T) {
	require.Equal(t, "agent-forward/0", Address(0))
	i, ok, err := ParseAddress(Address(17))
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, uint16(17), i)

	for _, plain := range []string{"10.0.2.100:5000", "registry.example:443", "agent-forward", ""} {
		_, ok, err := ParseAddress(plain)
		require.NoError(t, err, plain)
		require.False(t, ok, plain)
	}
	for _, bad := range []string{"agent-forward/", "agent-forward/x", "agent-forward/100", "agent-forward/-1", "agent-forward/01", "agent-forward/1:80"} {
		_, _, err := ParseAddress(bad)
		require.ErrorIs(t, err, ErrUnknownForward, bad)
		require.ErrorContains(t, err, "want agent-forward/<index> with an index 0-99", bad)
	}
}
