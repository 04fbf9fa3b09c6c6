package tdx

import (
	"encoding/binary"
	"fmt"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
)

// MaxQuoteSize bounds a TDX quote in bytes (64 KiB); real DCAP v4 quotes with
// their PCK chain are about 5 KiB.
const MaxQuoteSize = 64 << 10

// Byte offsets of the DCAP quote v4 layout (Intel TDX DCAP Quoting Library
// API, appendix "Quote Format"): a 48-byte header, the 584-byte TD quote
// body, the 4-byte signed-data size, then the ECDSA signature data.
const (
	quoteBodyEnd        = 0x278
	signedDataStart     = 0x27C
	certDataHeaderAt    = 0x80  // in the signed data: after signature and attestation key
	certDataStart       = 0x86  // 2-byte type, 4-byte size
	qeAuthSizeAt        = 0x1C0 // in QE certification data: after QE report and its signature
	pckChainHeaderBytes = 6     // 2-byte type, 4-byte size
)

// parserFault prefixes errors recovered from a panic in a decoder; fuzz
// targets fail on it.
const parserFault = "internal parser fault"

// ParseQuote decodes a DCAP quote version 4 with go-tdx-guest's
// abi.QuoteToProto after checking every length field of the layout against
// the buffer (that decoder slices by lengths read from the input and would
// otherwise panic on a truncated or forged quote). It never panics.
func ParseQuote(b []byte) (q *pb.QuoteV4, err error) {
	defer func() {
		if r := recover(); r != nil {
			q, err = nil, fmt.Errorf("%s: %v", parserFault, r)
		}
	}()
	if err := checkLayout(b); err != nil {
		return nil, err
	}
	anyQuote, err := abi.QuoteToProto(b)
	if err != nil {
		return nil, fmt.Errorf("decode TDX quote: %w", err)
	}
	q, ok := anyQuote.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("decode TDX quote: got %T, want a version 4 quote", anyQuote)
	}
	return q, nil
}

func checkLayout(b []byte) error {
	if len(b) > MaxQuoteSize {
		return fmt.Errorf("TDX quote is %d bytes, more than the %d allowed", len(b), MaxQuoteSize)
	}
	if len(b) < abi.QuoteMinSize {
		return fmt.Errorf("TDX quote is %d bytes, a DCAP quote v4 is at least %d bytes: pass the raw quote", len(b), abi.QuoteMinSize)
	}
	if v := binary.LittleEndian.Uint16(b[0:2]); v != abi.QuoteVersion {
		return fmt.Errorf("TDX quote version is %d, want %d", v, abi.QuoteVersion)
	}
	signed := b[signedDataStart:]
	size := uint64(binary.LittleEndian.Uint32(b[quoteBodyEnd:signedDataStart]))
	if size > uint64(len(signed)) {
		return fmt.Errorf("TDX quote's signed data size is %d bytes, but only %d bytes follow", size, len(signed))
	}
	signed = signed[:size]
	if len(signed) < certDataStart {
		return fmt.Errorf("TDX quote's signed data is %d bytes, want at least %d", len(signed), certDataStart)
	}
	certSize := uint64(binary.LittleEndian.Uint32(signed[certDataHeaderAt+2 : certDataStart]))
	cert := signed[certDataStart:]
	if certSize != uint64(len(cert)) {
		return fmt.Errorf("TDX quote's certification data size is %d bytes, but %d bytes follow", certSize, len(cert))
	}
	if len(cert) < qeAuthSizeAt+2 {
		return fmt.Errorf("TDX quote's QE certification data is %d bytes, want at least %d", len(cert), qeAuthSizeAt+2)
	}
	pck := uint64(qeAuthSizeAt+2) + uint64(binary.LittleEndian.Uint16(cert[qeAuthSizeAt:qeAuthSizeAt+2]))
	if pck+pckChainHeaderBytes > uint64(len(cert)) {
		return fmt.Errorf("TDX quote's QE authentication data overruns the certification data (%d bytes)", len(cert))
	}
	chainSize := uint64(binary.LittleEndian.Uint32(cert[pck+2 : pck+pckChainHeaderBytes]))
	if rest := uint64(len(cert)) - pck - pckChainHeaderBytes; chainSize != rest {
		return fmt.Errorf("TDX quote's PCK certificate chain size is %d bytes, but %d bytes follow", chainSize, rest)
	}
	return nil
}
