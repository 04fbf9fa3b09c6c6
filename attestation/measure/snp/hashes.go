package snp

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/cofferhq/coffer/attestation/measure/ovmf"
	"github.com/cofferhq/coffer/guest/build/aptpkg"
)

// GUIDs of QEMU's SEV hashes table and its entries (QEMU target/i386/sev.c:
// sev_hash_table_header_guid, sev_cmdline_entry_guid, sev_initrd_entry_guid,
// sev_kernel_entry_guid; OVMF OvmfPkg/AmdSev/BlobVerifierLibSevHashes).
var (
	// HashTableGUID starts the table.
	HashTableGUID = ovmf.MustGUID("9438d606-4f22-4cc9-b479-a793d411fd21")
	// CmdlineEntryGUID tags the command-line entry.
	CmdlineEntryGUID = ovmf.MustGUID("97d02dd8-bd20-4c94-aa78-e7714d36ab2a")
	// InitrdEntryGUID tags the initrd entry.
	InitrdEntryGUID = ovmf.MustGUID("44baf731-3a2f-4bd7-9af1-41e29169781d")
	// KernelEntryGUID tags the kernel entry.
	KernelEntryGUID = ovmf.MustGUID("4de79437-abd2-427f-b835-d5b172d2045b")
)

// hashEntryLen is one entry's size: GUID, uint16 length, SHA-256.
const hashEntryLen = 16 + 2 + sha256.Size

// HashTableLen is the length QEMU writes in the SEV hashes table header:
// 16 + 2 + 3 × 50 = 168 bytes.
const HashTableLen = 168

// PaddedHashTableSize is the table's size in guest memory: HashTableLen
// rounded up to 16 bytes (QEMU PaddedSevHashTable), 176 bytes.
const PaddedHashTableSize = 176

// KernelHashes are the SHA-256 digests of a direct kernel boot's inputs that
// QEMU puts in the SEV hashes table and OVMF checks before it runs them.
type KernelHashes struct {
	// Cmdline is SHA-256 of the command line followed by one NUL byte
	// (QEMU hashes the NUL-terminated string; an empty command line is
	// SHA-256 of "\x00").
	Cmdline [sha256.Size]byte
	// Initrd is SHA-256 of the initrd file (of zero bytes if there is none).
	Initrd [sha256.Size]byte
	// Kernel is SHA-256 of the kernel file as given to QEMU -kernel.
	Kernel [sha256.Size]byte
}

// HashKernelFiles hashes the kernel file, the initrd file ("" for none) and
// the command line. Read errors name the file.
func HashKernelFiles(kernelPath, initrdPath, cmdline string) (KernelHashes, error) {
	var h KernelHashes
	var err error
	if h.Kernel, err = fileSHA256(kernelPath); err != nil {
		return h, fmt.Errorf("hash kernel: %w", err)
	}
	h.Initrd = sha256.Sum256(nil)
	if initrdPath != "" {
		if h.Initrd, err = fileSHA256(initrdPath); err != nil {
			return h, fmt.Errorf("hash initrd: %w", err)
		}
	}
	h.Cmdline = CmdlineSHA256(cmdline)
	return h, nil
}

// CmdlineSHA256 returns SHA-256 of cmdline followed by one NUL byte.
func CmdlineSHA256(cmdline string) [sha256.Size]byte {
	return sha256.Sum256(append([]byte(cmdline), 0))
}

// fileSHA256 returns the SHA-256 of the file at path, read in a stream.
func fileSHA256(path string) ([sha256.Size]byte, error) {
	h, err := aptpkg.FileSHA256(path)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return [sha256.Size]byte{}, fmt.Errorf("hash %s: bad SHA-256 %q", path, h)
	}
	return [sha256.Size]byte(b), nil
}

// Table returns the padded SEV hashes table, 176 bytes: header GUID,
// uint16 length 168, then the cmdline, initrd and kernel entries (each GUID,
// uint16 length 50, SHA-256), then 8 zero bytes of padding (QEMU sev.c
// SevHashTable / PaddedSevHashTable).
func (h *KernelHashes) Table() [PaddedHashTableSize]byte {
	var t [PaddedHashTableSize]byte
	copy(t[0:], HashTableGUID[:])
	binary.LittleEndian.PutUint16(t[16:], HashTableLen)
	off := 18
	for _, e := range []struct {
		g ovmf.GUID
		h [sha256.Size]byte
	}{{CmdlineEntryGUID, h.Cmdline}, {InitrdEntryGUID, h.Initrd}, {KernelEntryGUID, h.Kernel}} {
		copy(t[off:], e.g[:])
		binary.LittleEndian.PutUint16(t[off+16:], uint16(hashEntryLen))
		copy(t[off+18:], e.h[:])
		off += hashEntryLen
	}
	return t
}

// Page returns the 4 KiB page QEMU measures for the SNP_KERNEL_HASHES
// section: zeros with the padded table at byte offset off within the page
// (the hashes table GPA's offset in its page). off must leave room for
// the table.
func (h *KernelHashes) Page(off int) (*[ovmf.PageSize]byte, error) {
	if off < 0 || off+PaddedHashTableSize > ovmf.PageSize {
		return nil, fmt.Errorf("place SEV hashes table at page offset %#x: the %d-byte table does not fit in a 4 KiB page", off, PaddedHashTableSize)
	}
	var p [ovmf.PageSize]byte
	t := h.Table()
	copy(p[off:], t[:])
	return &p, nil
}
