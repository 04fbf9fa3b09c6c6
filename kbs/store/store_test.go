package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kbs.db")
	s, err := Open(path, Options{})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestResources(t *testing.T) {
	s, _ := openTemp(t)
	_, _, err := s.GetResource("a/b/c")
	require.True(t, errors.Is(err, errdefs.ErrNotFound), "%v", err)

	m1, err := s.PutResource("a/b/c", []byte("one"), "alice")
	require.NoError(t, err)
	require.Equal(t, uint64(1), m1.Version)
	require.Equal(t, Sum([]byte("one")), m1.SHA256)
	m2, err := s.PutResource("a/b/c", []byte("two!"), "bob")
	require.NoError(t, err)
	require.Equal(t, uint64(2), m2.Version)
	require.Equal(t, m1.Created, m2.Created)
	require.Equal(t, 4, m2.Size)

	v, meta, err := s.GetResource("a/b/c")
	require.NoError(t, err)
	require.Equal(t, "two!", string(v))
	require.Equal(t, "bob", meta.Actor)

	list, err := s.ListResources()
	require.NoError(t, err)
	require.Len(t, list, 1)

	audit, err := s.Audit(0)
	require.NoError(t, err)
	require.Len(t, audit, 2)
	enc, _ := json.Marshal(audit)
	require.False(t, bytes.Contains(enc, []byte("two!")), "audit log must not contain secret values: %s", enc)
	require.Equal(t, "resource", audit[1].Kind)
	require.Equal(t, uint64(2), audit[1].Version)
}

func TestDocumentsVersionedWithHistory(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	path := filepath.Join(t.TempDir(), "kbs.db")
	s, err := Open(path, Options{Now: func() time.Time { return now }})
	require.NoError(t, err)

	_, err = s.Document(KindAttestationPolicy)
	require.True(t, errors.Is(err, errdefs.ErrNotFound))

	d1, err := s.PutDocument(KindAttestationPolicy, []byte("p1"), "alice")
	require.NoError(t, err)
	require.Equal(t, uint64(1), d1.Version)
	now = now.Add(time.Minute)
	d2, err := s.PutDocument(KindAttestationPolicy, []byte("p2"), "bob")
	require.NoError(t, err)
	require.Equal(t, uint64(2), d2.Version)
	require.Equal(t, now, d2.Time)
	require.Equal(t, Sum([]byte("p2")), d2.SHA256)

	same, err := s.PutDocument(KindAttestationPolicy, []byte("p2"), "carol")
	require.NoError(t, err)
	require.Equal(t, d2, same, "identical content must not create a version")

	_, err = s.PutDocument(KindResourcePolicy, []byte("r1"), "alice")
	require.NoError(t, err)

	boom := errors.New("boom")
	_, err = s.UpdateDocument(KindAttestationPolicy, "x", func([]byte, bool) ([]byte, error) { return nil, boom })
	require.ErrorIs(t, err, boom)
	_, err = s.PutDocument(Kind("nope"), []byte("x"), "x")
	require.ErrorIs(t, err, errdefs.ErrInvalidArgument)
	require.NoError(t, s.Close())

	// Reopen: everything persisted.
	s, err = Open(path, Options{})
	require.NoError(t, err)
	defer s.Close()
	cur, err := s.Document(KindAttestationPolicy)
	require.NoError(t, err)
	require.Equal(t, "p2", string(cur.Content))
	h, err := s.History(KindAttestationPolicy)
	require.NoError(t, err)
	require.Len(t, h, 2)
	require.Equal(t, "p1", string(h[0].Content))
	require.Equal(t, "alice", h[0].Actor)
	require.Equal(t, "p2", string(h[1].Content))
	h, err = s.History(KindResourcePolicy)
	require.NoError(t, err)
	require.Len(t, h, 1)
	audit, err := s.Audit(2)
	require.NoError(t, err)
	require.Len(t, audit, 2)
	require.Equal(t, "resource-policy", audit[1].Kind)
}

func TestSecondOpenTimesOut(t *testing.T) {
	s, path := openTemp(t)
	_ = s
	_, err := Open(path, Options{LockTimeout: 100 * time.Millisecond})
	require.Error(t, err)
	require.Contains(t, err.Error(), "another cc-kbs")
}
