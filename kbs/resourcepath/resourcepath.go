// Package resourcepath parses and validates KBS resource paths,
// <repository>/<type>/<tag> (trustee kbs/docs/kbs_attestation_protocol.md
// "Secret Resource"), before anything touches the store.
//
// The rules are deliberately narrow: the path is checked in its escaped
// (on-the-wire) form, so no percent-encoding is accepted at all (which
// rules out %2e%2e, %2f, %00 and double encoding); it must have exactly
// three non-empty segments; each segment is 1..128 bytes of
// [A-Za-z0-9._-] not starting with '.' (which rules out "." and "..").
package resourcepath

import (
	"errors"
	"fmt"
	"strings"
)

// MaxSegment is the maximum length of one segment, bytes.
const MaxSegment = 128

// ErrInvalid is wrapped by every validation failure.
var ErrInvalid = errors.New("invalid resource path")

// Path is a validated resource path.
type Path struct {
	Repository string
	Type       string
	Tag        string
}

// String returns "repository/type/tag".
func (p Path) String() string { return p.Repository + "/" + p.Type + "/" + p.Tag }

// Segments returns [repository, type, tag].
func (p Path) Segments() []string { return []string{p.Repository, p.Type, p.Tag} }

// Parse validates escaped, the path after "/kbs/v0/resource/" exactly as
// sent (URL.EscapedPath or the raw request URI, without query), and
// returns its segments. Errors wrap ErrInvalid and name the offending
// segment.
func Parse(escaped string) (Path, error) {
	if strings.ContainsRune(escaped, '%') {
		return Path{}, fmt.Errorf("resource path %q contains percent-encoding: send plain [A-Za-z0-9._-] segments: %w", escaped, ErrInvalid)
	}
	parts := strings.Split(escaped, "/")
	if len(parts) != 3 {
		return Path{}, fmt.Errorf("resource path %q has %d segments: want <repository>/<type>/<tag>: %w", escaped, len(parts), ErrInvalid)
	}
	for i, s := range parts {
		if err := checkSegment(s); err != nil {
			return Path{}, fmt.Errorf("resource path %q segment %d: %w", escaped, i+1, err)
		}
	}
	return Path{Repository: parts[0], Type: parts[1], Tag: parts[2]}, nil
}

// FromString validates "repository/type/tag" (the form the CLI takes).
func FromString(s string) (Path, error) { return Parse(s) }

func checkSegment(s string) error {
	if s == "" {
		return fmt.Errorf("segment is empty: %w", ErrInvalid)
	}
	if len(s) > MaxSegment {
		return fmt.Errorf("segment is %d bytes: want at most %d: %w", len(s), MaxSegment, ErrInvalid)
	}
	if s[0] == '.' {
		return fmt.Errorf("segment %q starts with '.': %w", s, ErrInvalid)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("segment %q has byte 0x%02x at %d: want only [A-Za-z0-9._-]: %w", s, c, i, ErrInvalid)
		}
	}
	return nil
}
