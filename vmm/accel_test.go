package vmm

import (
	"os"
	"path/filepath"
	"testing"
)

func TestResolveAccel(t *testing.T) {
	dir := t.TempDir()
	kvm := filepath.Join(dir, "kvm") // a regular file opens read-write like a usable /dev/kvm
	if err := os.WriteFile(kvm, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bare := filepath.Join(dir, "cpuinfo-bare")
	nested := filepath.Join(dir, "cpuinfo-nested")
	writeFile(t, bare, "processor\t: 0\nflags\t\t: fpu vme de pse svm\n\nprocessor\t: 1\nflags\t\t: fpu vme de pse svm\n")
	writeFile(t, nested, "processor\t: 0\nflags\t\t: fpu vme de pse hypervisor svm\n")
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		name    string
		in      Accel
		kvm     string
		cpuinfo string
		want    Accel
	}{
		{"auto with kvm on bare metal", AccelAuto, kvm, bare, AccelKVM},
		{"empty means auto", "", kvm, bare, AccelKVM},
		{"auto nested falls back to tcg", AccelAuto, kvm, nested, AccelTCG},
		{"auto without /dev/kvm", AccelAuto, missing, bare, AccelTCG},
		{"auto with unreadable cpuinfo", AccelAuto, kvm, missing, AccelTCG},
		{"explicit kvm kept even when nested", AccelKVM, missing, nested, AccelKVM},
		{"explicit tcg kept", AccelTCG, kvm, bare, AccelTCG},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := resolveAccel(tt.in, tt.kvm, tt.cpuinfo); got != tt.want {
				t.Errorf("resolveAccel(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestResolveAccelThisHost checks the public function against this host's own
// /dev/kvm and /proc/cpuinfo.
func TestResolveAccelThisHost(t *testing.T) {
	want := AccelTCG
	if kvmUsable(kvmDevice) && !runningNested(cpuinfoPath) {
		want = AccelKVM
	}
	if got := ResolveAccel(AccelAuto); got != want {
		t.Errorf("ResolveAccel(auto) = %q, want %q", got, want)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
