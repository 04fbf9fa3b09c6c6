package ovmf

import (
	"encoding/binary"
	"fmt"

	"github.com/google/uuid"
)

// GUID is a 16-byte EFI GUID in its in-memory (on-disk) byte order: the
// first three fields little-endian, the last eight bytes as written (UEFI
// specification 2.10, appendix A "EFI_GUID"). This is the order in which
// GUIDs appear in an OVMF image and in QEMU's SEV hashes table.
type GUID [16]byte

// MustGUID converts the textual form "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
// to a GUID. It panics on malformed input; use it for constants only.
func MustGUID(s string) GUID {
	u := uuid.MustParse(s) // RFC 4122 order: every field big-endian
	var g GUID
	binary.LittleEndian.PutUint32(g[0:4], binary.BigEndian.Uint32(u[0:4]))
	binary.LittleEndian.PutUint16(g[4:6], binary.BigEndian.Uint16(u[4:6]))
	binary.LittleEndian.PutUint16(g[6:8], binary.BigEndian.Uint16(u[6:8]))
	copy(g[8:], u[8:])
	return g
}

// String returns the textual form of g ("96b582de-1fb2-45f7-baea-a366c55a082d").
func (g GUID) String() string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(g[0:4]), binary.LittleEndian.Uint16(g[4:6]),
		binary.LittleEndian.Uint16(g[6:8]), g[8:10], g[10:16])
}
