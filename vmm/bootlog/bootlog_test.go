package bootlog

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Console fragments as they appear in a real TCG boot of the Debian cloud
// kernel (SeaBIOS and the boot stub print terminal control sequences).
const (
	seabios = "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\nBooting from ROM...\r\n"
	kernel  = "Probing EDD (edd=off to disable)... o\x1bc\x1b[?7l\x1b[2J" +
		"[    0.000000] Linux version 6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3\r\n" +
		"[    0.000000] Kernel command line: console=ttyS0 loglevel=6\r\n" +
		"[    2.100000] Freeing unused kernel image (initmem) memory: 2660K\r\n" +
		"[    2.200000] Run /init as init process\r\n"
)

func TestDescribe(t *testing.T) {
	var many strings.Builder
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&many, "[    3.%06d] line %d\r\n", i, i)
	}
	tests := []struct {
		name string
		log  string
		want string // exact result, or prefix when it ends in "*"
	}{
		{"empty", "", "no console output: the firmware or kernel never started (check accel and kernel)"},
		{"only blank lines", "\r\n\r\n  \n", "no console output: the firmware or kernel never started (check accel and kernel)"},
		{"firmware only", seabios,
			"firmware ran but the kernel printed nothing (check the kernel image, and console=ttyS0 in the kernel command line): SeaBIOS (version 1.16.2-debian-1.16.2-1) | Booting from ROM..."},
		{"kernel stub only", seabios + "Probing EDD (edd=off to disable)... ok\r\n",
			"kernel booted, cc-agent never started: SeaBIOS (version 1.16.2-debian-1.16.2-1) | Booting from ROM... | Probing EDD (edd=off to disable)... ok"},
		{"kernel booted, no agent", seabios + kernel,
			"kernel booted, cc-agent never started: SeaBIOS (version 1.16.2-debian-1.16.2-1) | Booting from ROM... | Probing EDD (edd=off to disable)... o[    0.000000] Linux version 6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 | [    0.000000] Kernel command line: console=ttyS0 loglevel=6 | [    2.100000] Freeing unused kernel image (initmem) memory: 2660K | [    2.200000] Run /init as init process"},
		{"only the last 8 lines are quoted", many.String(),
			"kernel booted, cc-agent never started: [    3.000013] line 13 | [    3.000014] line 14 | [    3.000015] line 15 | [    3.000016] line 16 | [    3.000017] line 17 | [    3.000018] line 18 | [    3.000019] line 19 | [    3.000020] line 20"},
		{"kernel output without banner", "[    0.500000] pci 0000:00:01.0: something\r\n",
			"kernel booted, cc-agent never started: [    0.500000] pci 0000:00:01.0: something"},
		{"panic before agent", seabios + kernel + "[    2.300000] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r\n[    2.300100] CPU: 0 PID: 1 Comm: swapper\r\n",
			"kernel panicked: Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"},
		{"agent started, not listening", seabios + kernel + AgentStarting + "\r\nloading modules\r\n",
			"cc-agent started but never began listening: SeaBIOS (version 1.16.2-debian-1.16.2-1) | Booting from ROM... | Probing EDD (edd=off to disable)... o[    0.000000] Linux version 6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 | [    0.000000] Kernel command line: console=ttyS0 loglevel=6 | [    2.100000] Freeing unused kernel image (initmem) memory: 2660K | [    2.200000] Run /init as init process | cc-agent: starting | loading modules"},
		{"agent fatal then init panic", seabios + kernel + AgentStarting + "\r\n" + AgentFatal + " mount /proc: permission denied\r\n[    2.400000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\r\n",
			"cc-agent started but failed: mount /proc: permission denied"},
		{"agent fatal without reason", AgentStarting + "\n" + AgentFatal + "\n",
			"cc-agent started but failed: no reason given; last console lines: cc-agent: starting | cc-agent: fatal:"},
		{"agent listening", seabios + kernel + AgentStarting + "\r\n" + AgentListening + " on virtio-serial agent.0\r\n",
			"cc-agent is listening, but the host could not connect to it*"},
		{"listening then panic", kernel + AgentStarting + "\n" + AgentListening + "\n[    9.000000] Kernel panic - not syncing: Out of memory and no killable processes...\n",
			"kernel panicked: Kernel panic - not syncing: Out of memory and no killable processes...; the guest ran out of memory while booting (Out of memory and no killable processes...): give the VM more RAM (hypervisor.memory_mib, or the pod's memory limit)"},
		// The console of the Coffer guest booted in 128 MiB under TCG.
		{"initramfs too big for RAM", kernel + "[    2.047490] Initramfs unpacking failed: write error\ncc-agent: starting\n[    3.272851] init invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=0\n[    3.285302] Out of memory and no killable processes...\n[    3.285542] Kernel panic - not syncing: System is deadlocked on memory\n",
			"kernel panicked: Kernel panic - not syncing: System is deadlocked on memory; the guest ran out of memory while booting (Initramfs unpacking failed: write error): give the VM more RAM (hypervisor.memory_mib, or the pod's memory limit)"},
		{"long line is cut", "[    1.000000] " + strings.Repeat("x", 300) + "\n",
			"kernel booted, cc-agent never started: [    1.000000] " + strings.Repeat("x", 240-15) + "..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Describe([]byte(tt.log))
			if prefix, ok := strings.CutSuffix(tt.want, "*"); ok {
				if !strings.HasPrefix(got, prefix) {
					t.Errorf("Describe() = %q\nwant prefix %q", got, prefix)
				}
				return
			}
			if got != tt.want {
				t.Errorf("Describe() = %q\nwant        %q", got, tt.want)
			}
		})
	}
}

func TestDescribeFile(t *testing.T) {
	dir := t.TempDir()
	if got, want := DescribeFile(filepath.Join(dir, "missing.log")), "no console log: open "+filepath.Join(dir, "missing.log")+": no such file or directory"; got != want {
		t.Errorf("DescribeFile(missing) = %q, want %q", got, want)
	}
	small := filepath.Join(dir, "small.log")
	if err := os.WriteFile(small, []byte(kernel+AgentStarting+"\n"+AgentFatal+" no agent port\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := DescribeFile(small), "cc-agent started but failed: no agent port"; got != want {
		t.Errorf("DescribeFile(small) = %q, want %q", got, want)
	}
	// A log bigger than head+tail keeps its banner and its latest lines.
	big := filepath.Join(dir, "big.log")
	var b strings.Builder
	b.WriteString(kernel)
	noise := strings.Repeat("[    5.000000] noisy driver message\n", (readHead+readTail)/36+100)
	b.WriteString(noise)
	b.WriteString(AgentStarting + "\n")
	if err := os.WriteFile(big, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := DescribeFile(big); !strings.HasPrefix(got, "cc-agent started but never began listening: ") || !strings.HasSuffix(got, "| cc-agent: starting") {
		t.Errorf("DescribeFile(big) = %q, want agent started, never listening", got)
	}
}
