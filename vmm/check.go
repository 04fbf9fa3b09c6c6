package vmm

import (
	"errors"
	"fmt"
)

// The Check functions are the pieces of Config.Validate that backends with
// their own Validate (vmm/cloudhypervisor) reuse. Each returns nil, one
// error, or several joined (errors.Join), worded like Validate's lines and
// matching an errdefs class through errors.Is.

// CheckImageFile checks that path is an absolute path naming an existing
// regular file, for backends that validate their own extra images (an IGVM
// file, a firmware). It returns nil or one error worded like Validate's:
// "<what> <path>: no such file: <fix>", matching errdefs.ErrNotFound for a
// missing file and errdefs.ErrInvalidArgument otherwise (empty, relative,
// not a regular file).
func CheckImageFile(what, path, fix string) error {
	return check(func(v *validator) { v.checkImage(what, path, fix) })
}

// CheckSocketPath checks that path fits in MaxSocketPathLen bytes. The error
// (errdefs.ErrInvalidArgument) names what, the path, its length and fix.
func CheckSocketPath(what, path, fix string) error {
	return check(func(v *validator) { v.checkSocketPath(what, path, fix) })
}

// CheckName checks a VM name (Config.Name): not blank, no control
// characters (errdefs.ErrInvalidArgument).
func CheckName(name string) error {
	return check(func(v *validator) { v.checkName(name) })
}

// CheckStateDir checks Config.StateDir: an absolute path
// (errdefs.ErrInvalidArgument) naming an existing directory
// (errdefs.ErrNotFound when missing), and, when absolute, that the
// backend's control socket socketPath in it fits a unix socket path
// (CheckSocketPath; socketWhat names it, "QMP socket").
func CheckStateDir(dir, socketWhat, socketPath string) error {
	return check(func(v *validator) { v.checkStateDir(dir, socketWhat, socketPath) })
}

// CheckBinary checks that the VMM binary path is found (exec.LookPath):
// "<what> binary <path>: <error>: <fix>", errdefs.ErrNotFound.
func CheckBinary(what, path, fix string) error {
	return check(func(v *validator) { v.checkBinary(what, path, fix) })
}

// CheckVCPUs checks a vCPU count against 1 to max, the backend's limit
// (errdefs.ErrInvalidArgument).
func CheckVCPUs(n, max int) error {
	return check(func(v *validator) { v.checkVCPUs(n, max) })
}

// CheckMemory checks guest memory, MiB, against MinMemoryMiB
// (errdefs.ErrInvalidArgument).
func CheckMemory(mib int) error {
	return check(func(v *validator) { v.checkMemory(mib) })
}

// CheckTapFields checks a Tap's Name when set (at most MaxInterfaceNameLen
// bytes, no '/', ',' or spaces), its MAC (six bytes, unicast) and MTU (68
// to 65535, or 0), all errdefs.ErrInvalidArgument. Whether Name or File
// must be set is the backend's rule.
func CheckTapFields(t *Tap) error {
	return check(func(v *validator) { v.checkTapFields(t) })
}

// CheckGuestCID checks Agent.GuestCID: 3 to 4294967294
// (errdefs.ErrInvalidArgument).
func CheckGuestCID(cid uint32) error {
	return check(func(v *validator) { v.checkGuestCID(cid) })
}

// CheckAgentSocketPath checks a host-side Agent.SocketPath: set, absolute
// and short enough (errdefs.ErrInvalidArgument), in an existing directory
// (errdefs.ErrNotFound). example is a good path the fixes suggest, such as
// "/run/cc/<short-hash>/agent.sock".
func CheckAgentSocketPath(path, example string) error {
	return check(func(v *validator) { v.checkAgentSocketPath(path, example) })
}

// CheckTEESections checks that TEE.SNP and TEE.TDX are set only with
// their own TEE.Kind (errdefs.ErrInvalidArgument). TEE.Sim is the
// backend's to check.
func CheckTEESections(t *TEE) error {
	return check(func(v *validator) { v.checkTEESections(t) })
}

// CheckSNPHostData checks TEE.SNP.HostData: nil or exactly 32 bytes
// (errdefs.ErrInvalidArgument).
func CheckSNPHostData(b []byte) error {
	return check(func(v *validator) { v.checkSNPHostData(b) })
}

// check runs f on a fresh validator and returns its one error, its errors
// joined, or nil.
func check(f func(v *validator)) error {
	v := &validator{}
	f(v)
	if len(v.errs) == 1 {
		return v.errs[0]
	}
	return errors.Join(v.errs...)
}

// Errorf returns an error whose message is exactly the formatted text and
// which matches class (an errdefs class such as errdefs.ErrInvalidArgument)
// through errors.Is, the way Validate's lines do: no ": invalid argument"
// is appended to the message. Backends use it for their own validation.
func Errorf(class error, format string, args ...any) error {
	return &classedError{msg: fmt.Sprintf(format, args...), class: class}
}
