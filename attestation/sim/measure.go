package sim

import (
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"io"
	"os"
)

// MeasurementDomain prefixes the sim launch measurement input, so that no
// other SHA-384 input can collide with it by construction.
const MeasurementDomain = "coffer-sim-launch-v1\x00"

// LaunchMeasurement returns the 48-byte MEASUREMENT a sim VM reports for a
// direct kernel boot: SHA-384 over MeasurementDomain, then SHA-256(kernel),
// SHA-256(initrd) and SHA-256(cmdline followed by one NUL byte), 32 bytes
// each. The three hashes are the ones QEMU puts in the SEV hashes table
// for an SNP direct boot (QEMU target/i386/sev.c, "SEV hashes table"),
// which is how a real SNP launch digest covers the same three inputs; the
// sim folds them directly instead of through OVMF pages.
//
// The vmm computes it from exactly the files it boots; `ccctl measure --tee
// sim` computes it from the guest build. vCPUs and memory are not measured.
func LaunchMeasurement(kernelSHA256, initrdSHA256 [32]byte, cmdline string) [48]byte {
	h := sha512.New384()
	h.Write([]byte(MeasurementDomain))
	h.Write(kernelSHA256[:])
	h.Write(initrdSHA256[:])
	c := sha256.Sum256(append([]byte(cmdline), 0))
	h.Write(c[:])
	var out [48]byte
	h.Sum(out[:0])
	return out
}

// MeasureFiles is LaunchMeasurement over the files at kernelPath and
// initrdPath, read in a stream. It fails if either cannot be read; an
// empty initrdPath stands for no initrd (SHA-256 of zero bytes).
func MeasureFiles(kernelPath, initrdPath, cmdline string) ([48]byte, error) {
	k, err := fileSHA256(kernelPath)
	if err != nil {
		return [48]byte{}, fmt.Errorf("sim launch measurement: kernel: %w", err)
	}
	i := sha256.Sum256(nil)
	if initrdPath != "" {
		if i, err = fileSHA256(initrdPath); err != nil {
			return [48]byte{}, fmt.Errorf("sim launch measurement: initrd: %w", err)
		}
	}
	return LaunchMeasurement(k, i, cmdline), nil
}

func fileSHA256(path string) ([32]byte, error) {
	var out [32]byte
	f, err := os.Open(path)
	if err != nil {
		return out, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return out, fmt.Errorf("read %s: %w", path, err)
	}
	h.Sum(out[:0])
	return out, nil
}
