package snp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"testing"

	"github.com/cofferhq/coffer/attestation"
)

// BenchmarkVerifySNP measures one full SNP verification (parse, signature,
// validation) with the VCEK chain already verified and cached, as for a
// repeat attestation by a known chip.
func BenchmarkVerifySNP(b *testing.B) {
	chip := newFakeChip(b, goodTCB)
	v, err := NewVerifier(Config{TrustedRoots: chip.roots(), MinimumTCB: floorTCB})
	if err != nil {
		b.Fatal(err)
	}
	ev := chip.evidence(b, reportOpts{})
	opts := attestation.VerifyOptions{ReportData: wantReportData(), Now: testNow}
	if _, err := v.Verify(context.Background(), ev, opts); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(context.Background(), ev, opts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkECDSAP384Verify is the crypto floor: one bare ECDSA P-384
// signature verification over a SHA-384 digest, what an SNP report costs at
// minimum.
func BenchmarkECDSAP384Verify(b *testing.B) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha512.Sum384(make([]byte, 0x2a0))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig) {
			b.Fatal("signature does not verify")
		}
	}
}
