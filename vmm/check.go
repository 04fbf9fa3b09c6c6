package vmm

import "fmt"

// CheckImageFile checks that path is an absolute path naming an existing
// regular file, for backends that validate their own extra images (an IGVM
// file, a firmware). It returns nil or one error worded like Validate's:
// "<what> <path>: no such file: <fix>", matching errdefs.ErrNotFound for a
// missing file and errdefs.ErrInvalidArgument otherwise (empty, relative,
// not a regular file).
func CheckImageFile(what, path, fix string) error {
	v := &validator{}
	v.checkImage(what, path, fix)
	return v.first()
}

// CheckSocketPath checks that path fits in MaxSocketPathLen bytes. The error
// (errdefs.ErrInvalidArgument) names what, the path, its length and fix.
func CheckSocketPath(what, path, fix string) error {
	v := &validator{}
	v.checkSocketPath(what, path, fix)
	return v.first()
}

// first returns the validator's first error, or nil.
func (v *validator) first() error {
	if len(v.errs) == 0 {
		return nil
	}
	return v.errs[0]
}

// Errorf returns an error whose message is exactly the formatted text and
// which matches class (an errdefs class such as errdefs.ErrInvalidArgument)
// through errors.Is, the way Validate's lines do: no ": invalid argument"
// is appended to the message. Backends use it for their own validation.
func Errorf(class error, format string, args ...any) error {
	return &classedError{msg: fmt.Sprintf(format, args...), class: class}
}
