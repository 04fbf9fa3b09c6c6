package resourcepath

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	p, err := Parse("default/key/tls-cert.pem")
	require.NoError(t, err)
	require.Equal(t, Path{"default", "key", "tls-cert.pem"}, p)
	require.Equal(t, "default/key/tls-cert.pem", p.String())

	for _, bad := range []string{
		"", "a/b", "a/b/c/d", "a//c", "/a/b", "a/b/c/",
		"../b/c", "a/../c", "a/b/..", "./b/c", "a/.hidden/c",
		"%2e%2e/b/c", "a/%2E%2E/c", "a%2fb/c/d", "a/b%2Fc/d", "a/b/c%00", "a/b/%252e%252e",
		"a b/c/d", "a/b/c\x00", "a/b/é", "a\\b/c/d",
	} {
		_, err := Parse(bad)
		require.Error(t, err, "%q", bad)
		require.True(t, errors.Is(err, ErrInvalid), "%q", bad)
	}
	long := make([]byte, MaxSegment+1)
	for i := range long {
		long[i] = 'a'
	}
	_, err = Parse("a/b/" + string(long))
	require.ErrorIs(t, err, ErrInvalid)
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"a/b/c", "../a/b", "%2e%2e/a/b", "a/b/c/d", "a/./b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		// Anything accepted is three plain segments that round-trip and
		// can never name a parent directory or carry encodings.
		require.Equal(t, s, p.String())
		for _, seg := range p.Segments() {
			require.NotEmpty(t, seg)
			require.NotEqual(t, byte('.'), seg[0])
			require.NotContains(t, seg, "/")
			require.NotContains(t, seg, "%")
		}
	})
}
