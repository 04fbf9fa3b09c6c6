package qemu

import (
	"strings"
	"testing"
)

func TestTailBuffer(t *testing.T) {
	tb := newTailBuffer(10)
	tb.Write([]byte("abc\n"))
	tb.Write([]byte("def\r\n"))
	if got := tb.String(); got != "abc; def" {
		t.Errorf("String() = %q, want %q", got, "abc; def")
	}
	tb.Write([]byte("ghij"))
	if got := tb.String(); got != "...def; ghij" {
		t.Errorf("String() after overflow = %q, want %q", got, "...def; ghij")
	}
	n, err := tb.Write([]byte(strings.Repeat("x", 25) + "0123456789"))
	if n != 35 || err != nil {
		t.Errorf("Write() = %d, %v, want 35, nil", n, err)
	}
	if got := tb.String(); got != "...0123456789" {
		t.Errorf("String() after a large write = %q, want the last 10 bytes", got)
	}
}
