package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"github.com/cofferhq/coffer/guest/image"
	"github.com/cofferhq/coffer/guest/policy"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/ttrpc"
	"github.com/sirupsen/logrus"
)

const (
	// DefaultRunc is the runc binary used when Options.Runc is empty.
	DefaultRunc = "/usr/bin/runc"
	// DefaultStateDir is the state directory used when Options.StateDir is
	// empty.
	DefaultStateDir = "/run/cc"

	// streamClaimTimeout is how long a stream waits for its process, and a
	// process for its stream, before giving up (see streamRegistry).
	streamClaimTimeout = 60 * time.Second
	// preambleTimeout bounds reading a connection's channel byte and stream
	// header.
	preambleTimeout = 10 * time.Second
	// removeWait bounds waiting, on RemoveContainer, for the killed init to
	// be reaped and for output still in flight.
	removeWait = 5 * time.Second
	// shutdownWait bounds waiting, on Shutdown, for killed containers to
	// exit before PowerOff.
	shutdownWait = 2 * time.Second
	// powerOffDelay lets the Shutdown response leave before PowerOff.
	powerOffDelay = 100 * time.Millisecond
)

// ImagePuller pulls an image into a container's rootfs. image.Pull (wrapped
// in PullerFunc) is the real one; tests pass fakes.
type ImagePuller interface {
	// Pull fetches req into rootfs, an absolute directory path that is
	// missing or empty, with the contract of image.Pull.
	Pull(ctx context.Context, req image.Request, rootfs string) (*image.Result, error)
}

// PullerFunc adapts a function such as image.Pull to ImagePuller.
type PullerFunc func(ctx context.Context, req image.Request, rootfs string) (*image.Result, error)

// Pull calls f.
func (f PullerFunc) Pull(ctx context.Context, req image.Request, rootfs string) (*image.Result, error) {
	return f(ctx, req, rootfs)
}

// Options configure an Agent.
type Options struct {
	// Runc is the runc binary; DefaultRunc when empty.
	Runc string
	// StateDir holds the bundles, <StateDir>/containers/<id>/{config.json,
	// rootfs}; DefaultStateDir when empty. It must be on a filesystem runc
	// can pivot_root into (not the initramfs rootfs).
	StateDir string
	// RuncRoot is runc's --root (its state directory); <StateDir>/runc when
	// empty.
	RuncRoot string
	// Puller pulls images for PullImage. Required.
	Puller ImagePuller
	// PowerOff powers the guest off. Shutdown calls it, in its own
	// goroutine, after the containers were killed. Required.
	PowerOff func()
	// Policy decides every request and stdio stream (guest/policy): a
	// denied request fails with PermissionDenied naming the rule, a denied
	// output stream is drained and discarded, denied stdin reads EOF. nil
	// allows everything (tests). InitSandbox installs the init-data's
	// policy in it.
	Policy *policy.Engine
	// Confidential is the attestation and confidential data hub part; nil
	// for a plain guest (see Confidential).
	Confidential Confidential
	// Dial opens the registry connections of PullImage, after the
	// request's dial rewrites (image.RegistryConfig.Dial): cc-agent's
	// forward.Dialer, which carries network.forwards over the agent
	// transport. nil dials TCP directly.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Version is cc-agent's version for Health, e.g. "v0.1.0".
	Version string
	// Log is the agent's logger; a new logrus logger on stderr when nil.
	// New adds a hook to Log.Logger that keeps the last 1000 lines (of
	// every user of that logger) for the Diagnostics RPC.
	Log *logrus.Entry
}

// Agent serves the Coffer agent API (api/agent/v1): the ttrpc Agent service
// and the stdio streams. Create it with New, then call Serve once.
type Agent struct {
	opts    Options
	log     *logrus.Entry
	ring    *logRing
	started time.Time
	streams *streamRegistry
	oomCh   chan string
	runcSeq atomic.Uint64
	serving atomic.Bool
	done    chan struct{} // closed when Serve returns

	mu         sync.Mutex            // see the package doc for lock rules
	containers map[string]*container // nil value: ID reserved by a create or pull

	lifecycleMu sync.Mutex
	running     map[int]*process
	exitSubs    map[*exitSub]struct{}

	shutdownOnce sync.Once
	// initPolicySHA384 is the SHA-384 of the init-data's policy, the only
	// policy SetPolicy may install; nil without one.
	initPolicySHA384 atomic.Pointer[[48]byte]
}

// New checks opts, fills in defaults and returns an Agent. It creates
// StateDir/containers and RuncRoot. It returns an ErrInvalidArgument error
// when Puller or PowerOff is missing or a directory cannot be created.
func New(opts Options) (*Agent, error) {
	if opts.Puller == nil {
		return nil, fmt.Errorf("new agent: Options.Puller is nil, want an image puller: %w", errdefs.ErrInvalidArgument)
	}
	if opts.PowerOff == nil {
		return nil, fmt.Errorf("new agent: Options.PowerOff is nil, want a power-off function: %w", errdefs.ErrInvalidArgument)
	}
	if opts.Runc == "" {
		opts.Runc = DefaultRunc
	}
	if opts.StateDir == "" {
		opts.StateDir = DefaultStateDir
	}
	if opts.RuncRoot == "" {
		opts.RuncRoot = filepath.Join(opts.StateDir, "runc")
	}
	if opts.Log == nil {
		opts.Log = logrus.NewEntry(logrus.New())
	}
	for _, d := range []string{filepath.Join(opts.StateDir, "containers"), opts.RuncRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("new agent: create state directory: %w: %w", err, errdefs.ErrInvalidArgument)
		}
	}
	ring := newLogRing()
	opts.Log.Logger.AddHook(ring)
	return &Agent{
		opts:       opts,
		log:        opts.Log,
		ring:       ring,
		started:    time.Now(),
		streams:    newStreamRegistry(opts.Log, streamClaimTimeout),
		oomCh:      make(chan string, 64),
		done:       make(chan struct{}),
		containers: make(map[string]*container),
		running:    make(map[int]*process),
		exitSubs:   make(map[*exitSub]struct{}),
	}, nil
}

// Serve accepts connections on l until ctx is done or l fails, then closes
// l and returns (nil when ctx ended it). Each connection starts with a
// channel byte (agent.ReadChannel): ChannelRPC connections are served by
// the ttrpc Agent service, ChannelStream connections are attached to a
// process's stdio (agent.ReadStreamHeader).
//
// While Serve runs it owns child processes: it reaps every child of this
// process on SIGCHLD (containerd's reaper), so nothing else may wait for
// children with os/exec; run commands through reaper.Default instead. It
// sets go-runc's package-level Monitor to reaper.Default and restores it on
// return. When the process is not PID 1 it makes itself a child subreaper.
// go-runc puts exec process specs and console sockets in os.TempDir()
// ($TMPDIR, else /tmp), which must exist and be writable in the guest.
// Serve may be called once; containers still running when it returns are
// left running.
func (a *Agent) Serve(ctx context.Context, l net.Listener) error {
	if !a.serving.CompareAndSwap(false, true) {
		return fmt.Errorf("serve agent: Serve was already called: %w", errdefs.ErrFailedPrecondition)
	}
	defer close(a.done)
	defer l.Close()
	if os.Getpid() != 1 {
		if err := reaper.SetSubreaper(1); err != nil {
			return fmt.Errorf("serve agent: become child subreaper: %w", err)
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	ec := reaper.Default.Subscribe()
	exitsDone := make(chan struct{})
	go func() {
		a.processExits(ec)
		close(exitsDone)
	}()
	prevMonitor := runc.Monitor
	runc.Monitor = reaper.Default
	reaping := make(chan struct{})
	reapDone := make(chan struct{})
	go func() {
		a.reapLoop(ctx, reaping)
		close(reapDone)
	}()
	<-reaping
	defer func() {
		cancel()
		<-reapDone
		runc.Monitor = prevMonitor
		reaper.Default.Unsubscribe(ec)
		<-exitsDone
	}()

	var srvOpts []ttrpc.ServerOpt
	if a.opts.Policy != nil {
		srvOpts = append(srvOpts, ttrpc.WithUnaryServerInterceptor(a.opts.Policy.UnaryServerInterceptor()))
	}
	srv, err := ttrpc.NewServer(srvOpts...)
	if err != nil {
		return fmt.Errorf("serve agent: create ttrpc server: %w", err)
	}
	agent.RegisterTTRPCAgentService(srv, &service{a: a})
	rpcL := newConnListener(l.Addr())
	rpcDone := make(chan error, 1)
	go func() { rpcDone <- srv.Serve(ctx, rpcL) }()
	defer func() {
		srv.Close()
		rpcL.Close()
		<-rpcDone
		a.streams.close()
	}()

	go func() {
		<-ctx.Done()
		l.Close()
	}()
	a.log.WithField("address", l.Addr().String()).Info("agent serving")
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("serve agent: accept on %s: %w", l.Addr(), err)
		}
		go a.handleConn(conn, rpcL)
	}
}

// handleConn reads the preamble of one connection and dispatches it.
func (a *Agent) handleConn(conn net.Conn, rpcL *connListener) {
	conn.SetReadDeadline(time.Now().Add(preambleTimeout))
	ch, err := agent.ReadChannel(conn)
	if err != nil {
		a.refuseConn(conn, err)
		return
	}
	switch ch {
	case agent.ChannelRPC:
		conn.SetReadDeadline(time.Time{})
		rpcL.push(conn)
	case agent.ChannelStream:
		h, err := agent.ReadStreamHeader(conn)
		if err == nil {
			err = validateIDs(h.GetContainerId(), h.GetExecId())
		}
		if err != nil {
			a.refuseConn(conn, err)
			return
		}
		conn.SetReadDeadline(time.Time{})
		fields := logrus.Fields{"container_id": h.GetContainerId(), "exec_id": h.GetExecId(), "stream": h.GetKind().String()}
		if p := a.opts.Policy; p != nil && !p.AllowStream(h.GetContainerId(), h.GetExecId(), policy.StreamName(h.GetKind())) {
			a.log.WithFields(fields).Info("closing stream: the agent policy denies it")
			conn.Close()
			return
		}
		a.log.WithFields(fields).Debug("stream opened")
		a.streams.offer(streamKey{containerID: h.GetContainerId(), execID: h.GetExecId(), kind: h.GetKind()}, conn)
	}
}

func (a *Agent) refuseConn(conn net.Conn, err error) {
	if !errors.Is(err, io.EOF) {
		a.log.WithError(err).WithField("remote", fmt.Sprint(conn.RemoteAddr())).Warn("refusing connection")
	}
	conn.Close()
}
