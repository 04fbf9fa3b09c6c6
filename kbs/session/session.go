// Package session keeps the KBS's RCAR sessions in memory: one per /auth
// call, keyed by the random kbs-session-id cookie value, holding the
// single-use nonce, the negotiated runtime-data hash, the expiry, and after
// a successful /attest the attested tee-pubkey and token.
//
// Sessions are not persisted: a KBS restart sends clients back to /auth,
// which guest-components clients do on any 401 (trustee
// kbs/src/attestation/session.rs keeps them in memory too).
package session

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cofferhq/coffer/attestation"
)

// Errors of Store operations; callers map them to problem types.
var (
	// ErrUnknown: no session with that ID (never issued, swept, or the
	// server restarted).
	ErrUnknown = errors.New("unknown session")
	// ErrExpired: the session exists but is past its expiry.
	ErrExpired = errors.New("session expired")
	// ErrNonceMismatch: the nonce sent is not the session's.
	ErrNonceMismatch = errors.New("nonce does not match the session")
	// ErrNonceUsed: the session's nonce was already consumed by /attest.
	ErrNonceUsed = errors.New("nonce already used")
	// ErrNotAttested: the session has not completed /attest.
	ErrNotAttested = errors.New("session not attested")
	// ErrFull: MaxSessions unexpired sessions exist.
	ErrFull = errors.New("session table full")
)

// NonceBytes is the nonce size before base64 (trustee NONCE_SIZE_BYTES).
const NonceBytes = 32

// Session is a snapshot of one session. Store methods return copies;
// changing one does not change the store.
type Session struct {
	// ID is the cookie value: base64url of 32 random bytes.
	ID string
	// TEE is the evidence format named at /auth.
	TEE attestation.TEE
	// Nonce is the challenge nonce: standard base64 of NonceBytes random bytes.
	Nonce string
	// HashAlg is the runtime-data hash algorithm, a protocol.Hash* name.
	HashAlg string
	// Expires is when the session stops being usable.
	Expires time.Time
	// NonceUsed is set by the first /attest attempt, successful or not.
	NonceUsed bool
	// Attested is set once /attest succeeded.
	Attested bool
	// TEEPubKey is the attested runtime-data tee-pubkey JWK (JSON).
	TEEPubKey []byte
	// Token is the attestation token issued to the session.
	Token string
	// Payload is the token's claims JSON (what the resource policy sees).
	Payload []byte
}

// Store is a concurrency-safe session table. The zero value is not usable;
// call New.
type Store struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu       sync.Mutex
	sessions map[string]*Session
}

// Options configure a Store.
type Options struct {
	// TTL is how long a session lives after /auth (Trustee default 5 min).
	TTL time.Duration
	// MaxSessions bounds the table (memory DoS guard); 0 means 100000.
	MaxSessions int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// New returns an empty Store.
func New(o Options) *Store {
	if o.MaxSessions <= 0 {
		o.MaxSessions = 100000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.TTL <= 0 {
		o.TTL = 5 * time.Minute
	}
	return &Store{ttl: o.TTL, max: o.MaxSessions, now: o.Now, sessions: make(map[string]*Session)}
}

// TTL returns the session lifetime.
func (s *Store) TTL() time.Duration { return s.ttl }

// Create starts a session for tee with hash algorithm hashAlg, a fresh
// nonce and ID. It sweeps expired sessions when the table is full and
// returns ErrFull if it still is.
func (s *Store) Create(tee attestation.TEE, hashAlg string) (Session, error) {
	id, err := randomString(32, base64.RawURLEncoding)
	if err != nil {
		return Session{}, err
	}
	nonce, err := randomString(NonceBytes, base64.StdEncoding)
	if err != nil {
		return Session{}, err
	}
	now := s.now()
	sess := &Session{ID: id, TEE: tee, Nonce: nonce, HashAlg: hashAlg, Expires: now.Add(s.ttl)}

	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sessions) >= s.max {
		s.sweepLocked(now)
		if len(s.sessions) >= s.max {
			return Session{}, fmt.Errorf("create session: %d unexpired sessions exist (the limit): %w", len(s.sessions), ErrFull)
		}
	}
	s.sessions[id] = sess
	return *sess, nil
}

// BeginAttest checks that session id exists, is unexpired, that nonce is
// its nonce and unused, then marks the nonce used, so any later /attest on
// the session fails with ErrNonceUsed whatever the outcome of this one.
func (s *Store) BeginAttest(id, nonce string) (Session, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[id]
	if !ok {
		return Session{}, ErrUnknown
	}
	if !now.Before(sess.Expires) {
		return Session{}, fmt.Errorf("session expired at %s (now %s): %w", sess.Expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), ErrExpired)
	}
	if sess.NonceUsed {
		return Session{}, ErrNonceUsed
	}
	if nonce != sess.Nonce {
		return Session{}, ErrNonceMismatch
	}
	sess.NonceUsed = true
	return *sess, nil
}

// CompleteAttest records a successful attestation on session id: the
// attested tee-pubkey JWK (JSON), the token and its payload JSON. It
// returns ErrUnknown if the session vanished meanwhile.
func (s *Store) CompleteAttest(id string, teePubKey []byte, token string, payload []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[id]
	if !ok {
		return ErrUnknown
	}
	sess.Attested = true
	sess.TEEPubKey = append([]byte(nil), teePubKey...)
	sess.Token = token
	sess.Payload = append([]byte(nil), payload...)
	return nil
}

// Attested returns session id if it exists, is unexpired and attested.
func (s *Store) Attested(id string) (Session, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[id]
	if !ok {
		return Session{}, ErrUnknown
	}
	if !now.Before(sess.Expires) {
		return Session{}, fmt.Errorf("session expired at %s: %w", sess.Expires.UTC().Format(time.RFC3339), ErrExpired)
	}
	if !sess.Attested {
		return Session{}, ErrNotAttested
	}
	return *sess, nil
}

// Sweep deletes expired sessions and returns how many it deleted.
func (s *Store) Sweep() int {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sweepLocked(now)
}

// Len returns the number of sessions held, expired or not.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

func (s *Store) sweepLocked(now time.Time) int {
	n := 0
	for id, sess := range s.sessions {
		if !now.Before(sess.Expires) {
			delete(s.sessions, id)
			n++
		}
	}
	return n
}

func randomString(n int, enc *base64.Encoding) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read %d random bytes: %w", n, err)
	}
	return enc.EncodeToString(b), nil
}
