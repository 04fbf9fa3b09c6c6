package session

import (
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
)

func TestLifecycle(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := New(Options{TTL: time.Minute, Now: func() time.Time { return now }})
	a, err := s.Create(attestation.TEESim, "sha384")
	require.NoError(t, err)
	b, err := s.Create(attestation.TEESim, "sha384")
	require.NoError(t, err)
	require.NotEqual(t, a.ID, b.ID)
	require.NotEqual(t, a.Nonce, b.Nonce)
	raw, err := base64.StdEncoding.DecodeString(a.Nonce)
	require.NoError(t, err)
	require.Len(t, raw, NonceBytes)

	_, err = s.Attested(a.ID)
	require.ErrorIs(t, err, ErrNotAttested)
	_, err = s.BeginAttest(a.ID, b.Nonce)
	require.ErrorIs(t, err, ErrNonceMismatch)
	_, err = s.BeginAttest("nope", a.Nonce)
	require.ErrorIs(t, err, ErrUnknown)

	got, err := s.BeginAttest(a.ID, a.Nonce)
	require.NoError(t, err)
	require.True(t, got.NonceUsed)
	_, err = s.BeginAttest(a.ID, a.Nonce)
	require.ErrorIs(t, err, ErrNonceUsed, "a nonce is single-use")

	require.NoError(t, s.CompleteAttest(a.ID, []byte(`{"kty":"EC"}`), "tok", []byte(`{}`)))
	att, err := s.Attested(a.ID)
	require.NoError(t, err)
	require.Equal(t, "tok", att.Token)

	now = now.Add(time.Minute)
	_, err = s.Attested(a.ID)
	require.ErrorIs(t, err, ErrExpired)
	_, err = s.BeginAttest(b.ID, b.Nonce)
	require.ErrorIs(t, err, ErrExpired)
	require.Equal(t, 2, s.Sweep())
	require.Equal(t, 0, s.Len())
}

func TestFull(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := New(Options{TTL: time.Minute, MaxSessions: 2, Now: func() time.Time { return now }})
	for range 2 {
		_, err := s.Create(attestation.TEESNP, "sha384")
		require.NoError(t, err)
	}
	_, err := s.Create(attestation.TEESNP, "sha384")
	require.True(t, errors.Is(err, ErrFull))
	now = now.Add(2 * time.Minute) // expired ones are swept to make room
	_, err = s.Create(attestation.TEESNP, "sha384")
	require.NoError(t, err)
	require.Equal(t, 1, s.Len())
}
