package gen

import "github.com/containerd/errdefs/pkg/errgrpc"

func errgrpcNative(err error) error { return errgrpc.ToNative(err) }
