// Package store is the KBS's embedded persistent state: resources (the
// secrets), the versioned documents (attestation policy, resource policy,
// reference values) with their full history, and an audit log of every
// admin change. It is one bbolt file; every change is one bbolt
// transaction, fsynced before it returns, so a crash leaves either the old
// or the new state, never a half-written one.
//
// Documents are versioned: each change gets the next version number (1, 2,
// ...), a UTC timestamp, the SHA-256 of its content and the admin subject
// that made it; every version stays in the history bucket. Resources keep
// a version and SHA-256 too, but the history of a resource records only
// metadata: secret values are never copied into the audit trail.
package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"

	"github.com/cofferhq/coffer/kbs/protocol"
)

// Kind names a versioned document.
type Kind string

// The versioned documents.
const (
	KindAttestationPolicy Kind = "attestation-policy"
	KindResourcePolicy    Kind = "resource-policy"
	KindReferenceValues   Kind = "reference-values"
)

// Kinds lists every Kind.
var Kinds = []Kind{KindAttestationPolicy, KindResourcePolicy, KindReferenceValues}

// Valid reports whether k is one of Kinds.
func (k Kind) Valid() bool {
	for _, x := range Kinds {
		if x == k {
			return true
		}
	}
	return false
}

var (
	bucketResources = []byte("resources")
	bucketDocuments = []byte("documents")
	bucketHistory   = []byte("history")
	bucketAudit     = []byte("audit")
)

// Document is one version of a versioned document.
type Document struct {
	Kind    Kind      `json:"kind"`
	Version uint64    `json:"version"`
	Time    time.Time `json:"time"`
	SHA256  string    `json:"sha256"`
	Actor   string    `json:"actor,omitempty"`
	Content []byte    `json:"content"`
}

// ResourceMeta describes a stored resource without its value.
type ResourceMeta = protocol.ResourceMeta

type resourceRecord struct {
	ResourceMeta
	Data []byte `json:"data"`
}

// AuditEntry records one admin change.
type AuditEntry = protocol.AuditEntry

// Store is an open KBS database. Its methods are safe for concurrent use.
type Store struct {
	db  *bolt.DB
	now func() time.Time
}

// Options configure Open.
type Options struct {
	// LockTimeout bounds the wait for the database file lock; 0 means 2 s.
	LockTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Open opens (creating if needed, mode 0600, parent directory 0700) the
// bbolt database at path.
func Open(path string, o Options) (*Store, error) {
	if o.LockTimeout <= 0 {
		o.LockTimeout = 2 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create KBS data directory %s: %w", filepath.Dir(path), err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.LockTimeout})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open KBS database %s: still locked after %s; is another cc-kbs using this data_dir?: %w", path, o.LockTimeout, err)
		}
		return nil, fmt.Errorf("open KBS database %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketResources, bucketDocuments, bucketHistory, bucketAudit} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise KBS database %s: %w", path, err)
	}
	return &Store{db: db, now: o.Now}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Sum returns the lower-case hex SHA-256 of b.
func Sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// PutResource stores data at path ("repository/type/tag", validated by the
// caller) as its next version and appends an audit entry (metadata only).
func (s *Store) PutResource(path string, data []byte, actor string) (ResourceMeta, error) {
	var meta ResourceMeta
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketResources)
		now := s.now().UTC()
		rec := resourceRecord{ResourceMeta: ResourceMeta{Path: path, Version: 1, Created: now}}
		if old := b.Get([]byte(path)); old != nil {
			var prev resourceRecord
			if err := json.Unmarshal(old, &prev); err != nil {
				return fmt.Errorf("decode stored resource %s: %w", path, err)
			}
			rec.Version = prev.Version + 1
			rec.Created = prev.Created
		}
		rec.Updated, rec.Actor, rec.Size, rec.SHA256, rec.Data = now, actor, len(data), Sum(data), data
		enc, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		if err := b.Put([]byte(path), enc); err != nil {
			return err
		}
		meta = rec.ResourceMeta
		return appendAudit(tx, AuditEntry{Time: now, Actor: actor, Action: "set", Kind: "resource", Name: path,
			Version: rec.Version, SHA256: rec.SHA256, Size: rec.Size})
	})
	if err != nil {
		return ResourceMeta{}, fmt.Errorf("store resource %s: %w", path, err)
	}
	return meta, nil
}

// GetResource returns the value and metadata at path, or an error wrapping
// errdefs.ErrNotFound.
func (s *Store) GetResource(path string) ([]byte, ResourceMeta, error) {
	var rec resourceRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketResources).Get([]byte(path))
		if v == nil {
			return fmt.Errorf("resource %s does not exist: %w", path, errdefs.ErrNotFound)
		}
		return json.Unmarshal(v, &rec)
	})
	if err != nil {
		return nil, ResourceMeta{}, err
	}
	return rec.Data, rec.ResourceMeta, nil
}

// ListResources returns the metadata of every resource, sorted by path.
func (s *Store) ListResources() ([]ResourceMeta, error) {
	var out []ResourceMeta
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketResources).ForEach(func(_, v []byte) error {
			var rec resourceRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			out = append(out, rec.ResourceMeta)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list resources: %w", err)
	}
	return out, nil
}

// Document returns the current version of kind, or an error wrapping
// errdefs.ErrNotFound if it was never set.
func (s *Store) Document(kind Kind) (Document, error) {
	var d Document
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDocuments).Get([]byte(kind))
		if v == nil {
			return fmt.Errorf("%s was never set: %w", kind, errdefs.ErrNotFound)
		}
		return json.Unmarshal(v, &d)
	})
	return d, err
}

// PutDocument makes content the next version of kind. Content identical to
// the current version (same SHA-256) changes nothing and returns the
// current version.
func (s *Store) PutDocument(kind Kind, content []byte, actor string) (Document, error) {
	return s.UpdateDocument(kind, actor, func([]byte, bool) ([]byte, error) { return content, nil })
}

// UpdateDocument atomically replaces kind with fn(current, exists). fn runs
// inside the write transaction, so concurrent updates serialise; an error
// from fn aborts the update and is returned as is.
func (s *Store) UpdateDocument(kind Kind, actor string, fn func(current []byte, exists bool) ([]byte, error)) (Document, error) {
	if !kind.Valid() {
		return Document{}, fmt.Errorf("document kind %q is unknown: want one of %v: %w", kind, Kinds, errdefs.ErrInvalidArgument)
	}
	var out Document
	err := s.db.Update(func(tx *bolt.Tx) error {
		docs := tx.Bucket(bucketDocuments)
		var cur Document
		exists := false
		if v := docs.Get([]byte(kind)); v != nil {
			if err := json.Unmarshal(v, &cur); err != nil {
				return fmt.Errorf("decode stored %s: %w", kind, err)
			}
			exists = true
		}
		content, err := fn(cur.Content, exists)
		if err != nil {
			return err
		}
		sum := Sum(content)
		if exists && sum == cur.SHA256 {
			out = cur
			return nil
		}
		now := s.now().UTC()
		out = Document{Kind: kind, Version: cur.Version + 1, Time: now, SHA256: sum, Actor: actor, Content: content}
		enc, err := json.Marshal(out)
		if err != nil {
			return err
		}
		if err := docs.Put([]byte(kind), enc); err != nil {
			return err
		}
		if err := tx.Bucket(bucketHistory).Put(historyKey(kind, out.Version), enc); err != nil {
			return err
		}
		return appendAudit(tx, AuditEntry{Time: now, Actor: actor, Action: "set", Kind: string(kind),
			Version: out.Version, SHA256: sum, Size: len(content)})
	})
	if err != nil {
		return Document{}, fmt.Errorf("update %s: %w", kind, err)
	}
	return out, nil
}

// History returns every version of kind, oldest first.
func (s *Store) History(kind Kind) ([]Document, error) {
	var out []Document
	prefix := []byte(string(kind) + "/")
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketHistory).Cursor()
		for k, v := c.Seek(prefix); k != nil && len(k) == len(prefix)+8 && string(k[:len(prefix)]) == string(prefix); k, v = c.Next() {
			var d Document
			if err := json.Unmarshal(v, &d); err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s history: %w", kind, err)
	}
	return out, nil
}

// Audit returns the last limit audit entries (all if limit <= 0), oldest
// first.
func (s *Store) Audit(limit int) ([]AuditEntry, error) {
	var out []AuditEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			var e AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

func appendAudit(tx *bolt.Tx, e AuditEntry) error {
	b := tx.Bucket(bucketAudit)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	e.Seq = seq
	enc, err := json.Marshal(e)
	if err != nil {
		return err
	}
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return b.Put(k[:], enc)
}

func historyKey(kind Kind, version uint64) []byte {
	k := make([]byte, 0, len(kind)+1+8)
	k = append(k, kind...)
	k = append(k, '/')
	return binary.BigEndian.AppendUint64(k, version)
}
