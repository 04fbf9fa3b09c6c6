package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"

	"github.com/cofferhq/coffer/snapshot"
)

// DefaultShutdownTimeout bounds how long Run waits for in-flight requests
// when its context ends, before it cuts them off.
const DefaultShutdownTimeout = 10 * time.Second

// staleDialTimeout bounds the probe of an existing socket at start.
const staleDialTimeout = time.Second

// Server serves one snapshot.Snapshotter on a unix socket.
type Server struct {
	cfg    Config
	sn     *snapshot.Snapshotter
	grpc   *grpc.Server
	lis    net.Listener
	logger *logrus.Entry
}

// New validates cfg, opens the snapshotter at cfg.RootPath and listens on
// cfg.Address (mode 0600; the parent directory is created with mode 0711).
// A socket left at cfg.Address by a dead process is removed; a live one
// (something answers a connection) gives an error wrapping
// errdefs.ErrAlreadyExists, and a path that is not a socket is an error
// too. Request logs go to stderr at cfg.LogLevel. Call Serve, then Stop.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("start cc-snapshotter: %w", err)
	}
	level, _ := logrus.ParseLevel(cfg.LogLevel) // Validate checked it.
	logger := logrus.New()
	logger.SetLevel(level)
	logger.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: time.RFC3339Nano})
	entry := logrus.NewEntry(logger).WithField("component", "cc-snapshotter")

	sn, err := snapshot.NewSnapshotter(cfg.RootPath)
	if err != nil {
		return nil, err
	}
	lis, err := listen(cfg.Address)
	if err != nil {
		_ = sn.Close()
		return nil, err
	}
	withLogger := func(ctx context.Context) context.Context { return log.WithLogger(ctx, entry) }
	g := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(withLogger(ctx), req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, loggedStream{ServerStream: ss, ctx: withLogger(ss.Context())})
		}),
	)
	snapshotsapi.RegisterSnapshotsServer(g, snapshotservice.FromSnapshotter(sn))
	return &Server{cfg: cfg, sn: sn, grpc: g, lis: lis, logger: entry}, nil
}

// loggedStream is a grpc.ServerStream whose context carries the server's
// logger.
type loggedStream struct {
	grpc.ServerStream
	ctx context.Context
}

// Context returns the stream context with the server's logger.
func (s loggedStream) Context() context.Context { return s.ctx }

// listen removes a stale socket at path and listens there.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = lis.Close()
		return nil, fmt.Errorf("restrict socket %s to root: %w", path, err)
	}
	return lis, nil
}

// removeStaleSocket removes the socket at path when nothing serves it.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check socket path: %w", err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("listen on %s: the path exists and is not a socket (mode %s); remove it or choose another address", path, fi.Mode())
	}
	conn, err := net.DialTimeout("unix", path, staleDialTimeout)
	if err == nil {
		_ = conn.Close()
		return fmt.Errorf("listen on %s: another process serves this socket (a running cc-snapshotter?); stop it or choose another address: %w", path, errdefs.ErrAlreadyExists)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// Address returns the socket path the server listens on.
func (s *Server) Address() string { return s.cfg.Address }

// Snapshotter returns the served snapshotter.
func (s *Server) Snapshotter() *snapshot.Snapshotter { return s.sn }

// Serve answers requests until Stop; it returns nil after Stop and the
// listener's error otherwise.
func (s *Server) Serve() error {
	s.logger.WithFields(logrus.Fields{"address": s.cfg.Address, "root": s.cfg.RootPath}).Info("cc-snapshotter serving")
	if err := s.grpc.Serve(s.lis); err != nil {
		return fmt.Errorf("serve snapshots API on %s: %w", s.cfg.Address, err)
	}
	return nil
}

// Stop stops accepting connections, waits up to timeout for in-flight
// requests, cuts off those still running after it, closes the metadata
// database and removes the socket. It returns the error of closing the
// metadata.
func (s *Server) Stop(timeout time.Duration) error {
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		s.logger.WithField("timeout", timeout).Warn("requests still running at shutdown; cutting them off")
		s.grpc.Stop()
		<-done
	}
	// Serve closes the listener (which unlinks the socket) only if it ran.
	_ = s.lis.Close()
	if err := os.Remove(s.cfg.Address); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.logger.WithError(err).Warn("remove socket")
	}
	err := s.sn.Close()
	s.logger.Info("cc-snapshotter stopped")
	return err
}

// Run serves cfg until ctx ends (e.g. on SIGTERM), then stops gracefully
// within DefaultShutdownTimeout. It returns New's error, Serve's error if
// serving fails, or Stop's error.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve() }()
	select {
	case <-ctx.Done():
		s.logger.WithField("reason", context.Cause(ctx)).Info("shutting down")
		err := s.Stop(DefaultShutdownTimeout)
		<-errc
		return err
	case err := <-errc:
		_ = s.Stop(DefaultShutdownTimeout)
		return err
	}
}
