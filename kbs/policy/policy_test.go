package policy

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cofferhq/coffer/attestation"
	kbsconfig "github.com/cofferhq/coffer/configs/kbs"
	"github.com/cofferhq/coffer/kbs/ear"
	"github.com/cofferhq/coffer/kbs/refvalues"
)

var goodMeasurement = strings.Repeat("3e", 48)

func snpInput(mutate func(*AttestationInput)) *AttestationInput {
	c := &attestation.Claims{
		TEE:          attestation.TEESNP,
		Measurement:  goodMeasurement,
		ReportedTCB:  0xd500000000000004 | 22<<48, // ucode 213, snp 22, bl 4
		CommittedTCB: 0xd500000000000004 | 22<<48,
		LaunchTCB:    0xd500000000000004 | 22<<48,
	}
	in := &AttestationInput{
		TEE:             attestation.TEESNP,
		Claims:          c,
		TCB:             TCBsOf(c),
		ReferenceValues: refvalues.TEEValues{Measurements: []string{goodMeasurement}},
	}
	in.TCBFloor = FloorOf(attestation.TEESNP, in.ReferenceValues, &refvalues.TCB{Bootloader: 4, SNP: 20, Microcode: 200}, "")
	if mutate != nil {
		mutate(in)
		in.TCB = TCBsOf(in.Claims)
	}
	return in
}

func TestDefaultAttestationPolicy(t *testing.T) {
	ctx := context.Background()
	p, err := CompileAttestation(ctx, kbsconfig.DefaultAttestationPolicy)
	require.NoError(t, err)

	tests := []struct {
		name       string
		mutate     func(*AttestationInput)
		wantStatus ear.Status
		wantClaim  string // a claim expected in NotAffirming
		wantReason string
	}{
		{name: "good", wantStatus: ear.StatusAffirming},
		{name: "wrong measurement", mutate: func(in *AttestationInput) { in.Claims.Measurement = strings.Repeat("00", 48) },
			wantStatus: ear.StatusWarning, wantClaim: "executables=33", wantReason: "is not in the snp reference values"},
		{name: "no reference values", mutate: func(in *AttestationInput) { in.ReferenceValues.Measurements = nil },
			wantStatus: ear.StatusWarning, wantClaim: "executables=33", wantReason: "(0 trusted)"},
		{name: "debug", mutate: func(in *AttestationInput) { in.Claims.Debug = true },
			wantStatus: ear.StatusContraindicated, wantClaim: "configuration=96", wantReason: "debug is enabled"},
		{name: "reported TCB low", mutate: func(in *AttestationInput) { in.Claims.ReportedTCB = 0xd500000000000004 | 8<<48 },
			wantStatus: ear.StatusWarning, wantClaim: "hardware=32", wantReason: "reported TCB"},
		{name: "committed TCB low", mutate: func(in *AttestationInput) { in.Claims.CommittedTCB = 0x7300000000000004 | 22<<48 },
			wantStatus: ear.StatusWarning, wantClaim: "hardware=32", wantReason: "committed TCB"},
		{name: "launch TCB low", mutate: func(in *AttestationInput) { in.Claims.LaunchTCB = 0xd500000000000003 | 22<<48 },
			wantStatus: ear.StatusWarning, wantClaim: "hardware=32", wantReason: "launch TCB"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := p.Evaluate(ctx, snpInput(tc.mutate))
			require.NoError(t, err)
			require.Equal(t, tc.wantStatus, a.TrustVector.Status(), "vector %v reasons %v", a.TrustVector, a.Reasons)
			if tc.wantClaim != "" {
				require.Contains(t, strings.Join(a.TrustVector.NotAffirming(), " "), tc.wantClaim)
				require.Contains(t, strings.Join(a.Reasons, "\n"), tc.wantReason)
			} else {
				require.Empty(t, a.Reasons)
				require.Equal(t, ear.TrustVector{"executables": 3, "hardware": 2, "configuration": 2}, a.TrustVector)
			}
		})
	}
}

func TestDefaultAttestationPolicyTDX(t *testing.T) {
	ctx := context.Background()
	p, err := CompileAttestation(ctx, kbsconfig.DefaultAttestationPolicy)
	require.NoError(t, err)
	c := &attestation.Claims{TEE: attestation.TEETDX, Measurement: goodMeasurement, TeeTCBSVN: "03000500000000000000000000000000"}
	rv := refvalues.TEEValues{Measurements: []string{goodMeasurement}}
	in := &AttestationInput{TEE: attestation.TEETDX, Claims: c, TCB: TCBsOf(c), ReferenceValues: rv,
		TCBFloor: FloorOf(attestation.TEETDX, rv, nil, "03000400000000000000000000000000")}
	a, err := p.Evaluate(ctx, in)
	require.NoError(t, err)
	require.Equal(t, ear.StatusAffirming, a.TrustVector.Status(), "%v %v", a.TrustVector, a.Reasons)

	in.TCBFloor = FloorOf(attestation.TEETDX, rv, nil, "03000600000000000000000000000000")
	a, err = p.Evaluate(ctx, in)
	require.NoError(t, err)
	require.Equal(t, ear.StatusWarning, a.TrustVector.Status())
	require.Contains(t, strings.Join(a.Reasons, " "), "TEE_TCB_SVN")
}

func TestFloorFromReferenceValuesWins(t *testing.T) {
	rv := refvalues.TEEValues{MinTCB: &refvalues.TCB{SNP: 30}}
	f := FloorOf(attestation.TEESNP, rv, &refvalues.TCB{SNP: 1}, "")
	require.Equal(t, uint8(30), f.TCB.SNP)
	f = FloorOf(attestation.TEESNP, refvalues.TEEValues{}, nil, "")
	require.Equal(t, refvalues.TCB{}, *f.TCB)
}

func TestDefaultResourcePolicy(t *testing.T) {
	ctx := context.Background()
	p, err := CompileResource(ctx, kbsconfig.DefaultResourcePolicy)
	require.NoError(t, err)
	claims := func(status string) map[string]any {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(`{"submods":{"cpu0":{"ear.status":"`+status+`"}}}`), &m))
		return m
	}
	req := Request{Plugin: "resource", ResourcePath: []string{"r", "t", "x"}, Repository: "r", Type: "t", Tag: "x"}
	d, err := p.Evaluate(ctx, &ResourceInput{Claims: claims("affirming"), Request: req})
	require.NoError(t, err)
	require.True(t, d.Allow)

	d, err = p.Evaluate(ctx, &ResourceInput{Claims: claims("warning"), Request: req})
	require.NoError(t, err)
	require.False(t, d.Allow)
	require.Equal(t, []string{`ear.status is "warning": want "affirming"`}, d.Reasons)

	d, err = p.Evaluate(ctx, &ResourceInput{Claims: map[string]any{}, Request: req})
	require.NoError(t, err)
	require.False(t, d.Allow, "no claims must deny")
}

func TestCompileRejects(t *testing.T) {
	ctx := context.Background()
	for name, src := range map[string]string{
		"syntax":        "package policy\nallow if {",
		"wrong package": "package other\nimport rego.v1\ndefault allow := false",
		"no allow":      "package policy\nimport rego.v1\ndefault deny := true",
		"rego v0":       "package policy\ndefault allow = false\nallow { true }",
	} {
		_, err := CompileResource(ctx, src)
		require.Error(t, err, name)
		require.True(t, errors.Is(err, ErrInvalid), name)
	}
	_, err := CompileAttestation(ctx, "package policy\nimport rego.v1\ndefault allow := false")
	require.ErrorIs(t, err, ErrInvalid)
	require.Contains(t, err.Error(), `no rule "trust_claims"`)
}

func TestAttestationPolicyOutputChecked(t *testing.T) {
	ctx := context.Background()
	for name, src := range map[string]string{
		"not object":    "package policy\nimport rego.v1\ntrust_claims := 3",
		"unknown claim": "package policy\nimport rego.v1\ntrust_claims := {\"speed\": 2}",
		"out of range":  "package policy\nimport rego.v1\ntrust_claims := {\"hardware\": 300}",
		"not integer":   "package policy\nimport rego.v1\ntrust_claims := {\"hardware\": \"2\"}",
		"undefined":     "package policy\nimport rego.v1\ntrust_claims := {\"hardware\": 2} if false",
	} {
		p, err := CompileAttestation(ctx, src)
		require.NoError(t, err, name)
		_, err = p.Evaluate(ctx, snpInput(nil))
		require.Error(t, err, name)
	}
}
