package harness

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
)

// maxNamespaceStem bounds the readable part of a namespace; containerd
// allows 76 characters in all.
const maxNamespaceStem = 48

// NamespaceFor returns a fresh containerd namespace for a test named name
// (usually t.Name()): name lowercased, every run of characters other than
// [a-z0-9] replaced by one '-', cut to 48 characters, then "-" and 8 random
// hex characters, e.g. "testleftovers-after-shim-kill-3fa81c0d". The result
// satisfies containerd's namespace rule
// ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$ (pkg/identifiers).
func NamespaceFor(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
			continue
		}
		if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	stem := strings.Trim(b.String(), "-")
	if len(stem) > maxNamespaceStem {
		stem = strings.TrimRight(stem[:maxNamespaceStem], "-")
	}
	if stem == "" {
		stem = "test"
	}
	return stem + "-" + RandomSuffix()
}

// RandomSuffix returns 8 random lowercase hex characters, for container
// IDs and namespaces that must not collide between runs.
func RandomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error.
	return hex.EncodeToString(b)
}
