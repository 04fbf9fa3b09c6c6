package vmm

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// TestChecks covers the Check functions backends reuse: nil for a good
// value, one classed line for one problem, joined lines for several.
func TestChecks(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name  string
		err   error
		class error
		want  []string // substrings, one per line; none for nil
	}{
		{"name ok", CheckName("pod1"), nil, nil},
		{"name control", CheckName("pod\x01"), errdefs.ErrInvalidArgument, []string{`Name "pod\x01" contains control characters`}},
		{"state dir ok", CheckStateDir(dir, "API socket", filepath.Join(dir, "api.sock")), nil, nil},
		{"state dir missing and long", CheckStateDir("/nonexistent/"+strings.Repeat("d", 100), "API socket", "/nonexistent/"+strings.Repeat("d", 100)+"/api.sock"),
			errdefs.ErrNotFound, []string{"StateDir /nonexistent/", "API socket path /nonexistent/"}},
		{"binary", CheckBinary("vmm", "/nonexistent/vmm", "install it"), errdefs.ErrNotFound, []string{"vmm binary /nonexistent/vmm: exec: "}},
		{"vcpus", CheckVCPUs(9, 8), errdefs.ErrInvalidArgument, []string{"VCPUs is 9, want 1 to 8"}},
		{"memory", CheckMemory(32), errdefs.ErrInvalidArgument, []string{"MemoryMiB is 32, want at least 64"}},
		{"tap ok", CheckTapFields(&Tap{Name: "tap0", MAC: "0a:58:0a:58:00:05", MTU: 1500}), nil, nil},
		{"tap bad", CheckTapFields(&Tap{Name: "a,b", MAC: "01:00:5e:00:00:01", MTU: 20}), errdefs.ErrInvalidArgument,
			[]string{`Network.Tap.Name "a,b" is not an interface name`, "is a multicast address", "Network.Tap.MTU is 20"}},
		{"cid", CheckGuestCID(2), errdefs.ErrInvalidArgument, []string{"Agent.GuestCID is 2"}},
		{"agent socket relative", CheckAgentSocketPath("vsock.sock", "/run/cc/x/vsock.sock"), errdefs.ErrInvalidArgument, []string{"Agent.SocketPath vsock.sock is relative"}},
		{"agent socket empty", CheckAgentSocketPath("", "/run/cc/x/vsock.sock"), errdefs.ErrInvalidArgument, []string{"such as /run/cc/x/vsock.sock"}},
		{"tee sections", CheckTEESections(&TEE{Kind: TEENone, SNP: &SNPConfig{}, TDX: &TDXConfig{}}), errdefs.ErrInvalidArgument,
			[]string{"TEE.SNP is set but TEE.Kind is \"none\"", "TEE.TDX is set but TEE.Kind is \"none\""}},
		{"snp host data", CheckSNPHostData(make([]byte, 48)), errdefs.ErrInvalidArgument, []string{"TEE.SNP.HostData is 48 bytes, want exactly 32"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == nil {
				if tt.err != nil {
					t.Fatalf("got %v, want nil", tt.err)
				}
				return
			}
			if !errors.Is(tt.err, tt.class) {
				t.Errorf("%v does not match %v", tt.err, tt.class)
			}
			lines := strings.Split(tt.err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("got %d lines %q, want %d", len(lines), lines, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("line %d = %q, want it to contain %q", i, lines[i], w)
				}
			}
		})
	}
}
