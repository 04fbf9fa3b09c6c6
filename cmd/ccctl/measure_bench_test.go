package main

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/guest/build"
)

// benchGuestDir returns build/guest if it has been built, or a temporary
// guest of the real artifacts' sizes (kernel 8 MB, initrd 7 MB, random).
func benchGuestDir(b *testing.B) string {
	b.Helper()
	if _, err := build.ReadManifest("../../build/guest"); err == nil {
		return "../../build/guest"
	}
	dir := b.TempDir()
	k, i := make([]byte, 8<<20), make([]byte, 7<<20)
	_, _ = rand.Read(k)
	_, _ = rand.Read(i)
	writeGuestBytes(b, dir, k, i, "console=ttyS0 loglevel=6 panic=-1")
	return dir
}

// benchAmdSevImage writes a 4 MiB firmware (the size of an AmdSevX64
// build): zeros followed by the AmdSevX64 suffix fixture.
func benchAmdSevImage(b *testing.B) string {
	b.Helper()
	suffix, err := os.ReadFile(measureAmdSev)
	if err != nil {
		b.Fatal(err)
	}
	img := make([]byte, 4<<20)
	copy(img[len(img)-len(suffix):], suffix)
	p := filepath.Join(b.TempDir(), "OVMF.fd")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkMeasureGuest is the time `ccctl measure --guest` takes for the
// project's own guest (including the manifest SHA-256 check), per TEE.
func BenchmarkMeasureGuest(b *testing.B) {
	dir := benchGuestDir(b)
	fw := benchAmdSevImage(b)
	b.Run("snp", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := runMeasureB(b, "--tee", "snp", "--guest", dir, "--ovmf", fw, "--vcpus", "2", "--vcpu-type", "EPYC-Milan"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sim", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := runMeasureB(b, "--tee", "sim", "--guest", dir); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tdx", func(b *testing.B) {
		if _, err := os.Stat("/usr/share/ovmf/OVMF.fd"); err != nil {
			b.Skip("no TDVF: /usr/share/ovmf/OVMF.fd (Debian package ovmf) is absent")
		}
		for b.Loop() {
			if _, _, err := runMeasureB(b, "--tee", "tdx", "--tdvf", "/usr/share/ovmf/OVMF.fd"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
