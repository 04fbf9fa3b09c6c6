package shim

import (
	"context"
	"errors"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errClasses maps errdefs classes to gRPC codes, most specific first.
var errClasses = []struct {
	class error
	code  codes.Code
}{
	{errdefs.ErrNotFound, codes.NotFound},
	{errdefs.ErrAlreadyExists, codes.AlreadyExists},
	{errdefs.ErrInvalidArgument, codes.InvalidArgument},
	{errdefs.ErrFailedPrecondition, codes.FailedPrecondition},
	{errdefs.ErrPermissionDenied, codes.PermissionDenied},
	{errdefs.ErrUnauthenticated, codes.Unauthenticated},
	{errdefs.ErrNotImplemented, codes.Unimplemented},
	{errdefs.ErrUnavailable, codes.Unavailable},
	{errdefs.ErrDataLoss, codes.DataLoss},
	{errdefs.ErrResourceExhausted, codes.ResourceExhausted},
	{errdefs.ErrConflict, codes.FailedPrecondition},
	{errdefs.ErrAborted, codes.Aborted},
	{errdefs.ErrOutOfRange, codes.OutOfRange},
	{errdefs.ErrInternal, codes.Internal},
}

// toGRPC converts an error to a gRPC status at the task API edge: the code
// of its errdefs class and its whole message, once. (errgrpc.ToGRPC turns
// every branch of an error that wraps several errors into a status detail,
// which ctr then prints as extra lines repeating the same cause.)
func toGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Unknown
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	for _, c := range errClasses {
		if errors.Is(err, c.class) {
			code = c.code
			break
		}
	}
	return status.Error(code, err.Error())
}
