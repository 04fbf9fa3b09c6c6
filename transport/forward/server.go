package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// DefaultDialTimeout bounds the host's TCP connect to an endpoint.
const DefaultDialTimeout = 10 * time.Second

// headerTimeout bounds how long the host waits for a guest connection's
// header.
const headerTimeout = 30 * time.Second

// Server is the host side: it answers forwarded connections from the
// guest by dialing the endpoint the header names.
type Server struct {
	// Endpoints are the host "ip:port" addresses forwards reach, in the
	// shim config's network.forwards order: Header.Index selects one.
	// Nothing else is ever dialed.
	Endpoints []string
	// Dial connects to an endpoint; nil means a net.Dialer with
	// DefaultDialTimeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Log receives one line per refused or failed forward; nil discards.
	Log *logrus.Entry

	wg sync.WaitGroup
}

// Serve answers every connection l accepts (see Handle) until l fails or
// ctx ends; it then closes l, waits for the forwards in progress to end
// (ctx ending cuts them) and returns nil if l was closed or ctx ended,
// else Accept's error.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer s.wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			l.Close()
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept forwarded connections on %s: %w", l.Addr(), err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.Handle(ctx, c)
		}()
	}
}

// Handle serves one forwarded connection and closes it: it reads the
// header (for at most 30 s), answers StatusRefused for a bad header or an
// index outside Endpoints, StatusDialFailed when the endpoint cannot be
// reached, and otherwise StatusOK, then copies bytes both ways until both
// directions ended or ctx ends. A side that finishes sending is
// half-closed on the other (CloseWrite) where the connection supports it.
func (s *Server) Handle(ctx context.Context, c net.Conn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(headerTimeout))
	h, err := ReadHeader(c)
	if err != nil {
		s.logf(err, "refused a forwarded connection")
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			WriteReply(c, StatusRefused, err.Error())
		}
		return
	}
	c.SetReadDeadline(time.Time{})
	if int(h.Index) >= len(s.Endpoints) {
		err := fmt.Errorf("forward %d is not configured: the shim has %d network.forwards entries (indexes 0-%d): %w", h.Index, len(s.Endpoints), len(s.Endpoints)-1, ErrUnknownForward)
		s.logf(err, "refused a forwarded connection")
		WriteReply(c, StatusRefused, err.Error())
		return
	}
	addr := s.Endpoints[h.Index]
	dctx, cancel := context.WithTimeout(ctx, DefaultDialTimeout)
	up, err := s.dial(dctx, addr)
	cancel()
	if err != nil {
		err = fmt.Errorf("host dial %s (network.forwards[%d]): %w", addr, h.Index, err)
		s.logf(err, "forward failed")
		WriteReply(c, StatusDialFailed, err.Error())
		return
	}
	defer up.Close()
	if err := WriteReply(c, StatusOK, ""); err != nil {
		s.logf(err, "forward: the guest went away")
		return
	}
	splice(ctx, c, up)
}

func (s *Server) dial(ctx context.Context, addr string) (net.Conn, error) {
	if s.Dial != nil {
		return s.Dial(ctx, "tcp", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

func (s *Server) logf(err error, msg string) {
	if s.Log != nil {
		s.Log.WithError(err).Warn(msg)
	}
}

// closeWriter is a connection that can be half-closed.
type closeWriter interface{ CloseWrite() error }

// splice copies a to b and b to a until both directions ended or ctx
// ends; then it closes both.
func splice(ctx context.Context, a, b net.Conn) {
	stop := context.AfterFunc(ctx, func() { a.Close(); b.Close() })
	defer stop()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if cw, ok := dst.(closeWriter); ok && err == nil {
			cw.CloseWrite()
		} else {
			// Without a half-close (or after an error) the only way to
			// pass the end on is to end both directions.
			a.Close()
			b.Close()
		}
		done <- struct{}{}
	}
	go pipe(a, b)
	go pipe(b, a)
	<-done
	<-done
	a.Close()
	b.Close()
}
