package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// scriptedOnce returns a dialOnce that fails with errs in turn (a nil entry
// yields a pipe connection) and, past the script, blocks until ctx ends and
// fails with ctx's error. It counts its calls in *n.
func scriptedOnce(n *int, errs ...error) dialOnce {
	return func(ctx context.Context) (net.Conn, error) {
		*n++
		if *n <= len(errs) {
			if err := errs[*n-1]; err != nil {
				return nil, err
			}
			c, _ := net.Pipe()
			return c, nil
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}
}

func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

func TestRetryDial(t *testing.T) {
	refused := syscall.ECONNREFUSED
	other := errors.New("permission denied")
	t.Run("connects after refusals", func(t *testing.T) {
		var n int
		c, g, err := retryDial(testCtx(t, 5*time.Second), time.Millisecond, scriptedOnce(&n, refused, refused, nil), isRefused)
		if c == nil || g != nil || err != nil || n != 3 {
			t.Fatalf("retryDial() = %v, %+v, %v after %d dials, want a connection after 3", c, g, err, n)
		}
		c.Close()
	})
	t.Run("returns other errors at once", func(t *testing.T) {
		var n int
		c, g, err := retryDial(testCtx(t, 5*time.Second), time.Millisecond, scriptedOnce(&n, refused, other), isRefused)
		if c != nil || g != nil || err != other || n != 2 {
			t.Fatalf("retryDial() = %v, %+v, %v after %d dials, want the error of dial 2", c, g, err, n)
		}
	})
	t.Run("ctx ends in a pause", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var n int
		dial := func(context.Context) (net.Conn, error) {
			n++
			time.AfterFunc(10*time.Millisecond, cancel) // well inside the hour-long pause
			return nil, refused
		}
		_, g, err := retryDial(ctx, time.Hour, dial, isRefused)
		if err != nil || g == nil || g.cut != nil || g.last != refused || g.attempts != 1 || n != 1 {
			t.Fatalf("retryDial() = %+v, %v after %d dials, want a give-up with the refusal and no cut attempt", g, err, n)
		}
	})
	t.Run("ctx cuts the first attempt", func(t *testing.T) {
		var n int
		_, g, err := retryDial(testCtx(t, 20*time.Millisecond), time.Millisecond, scriptedOnce(&n), isRefused)
		if err != nil || g == nil || g.last != nil || !errors.Is(g.cut, context.DeadlineExceeded) || g.attempts != 1 {
			t.Fatalf("retryDial() = %+v, %v, want a give-up whose cut attempt is the first", g, err)
		}
	})
	t.Run("ctx cuts a later attempt", func(t *testing.T) {
		var n int
		_, g, err := retryDial(testCtx(t, 50*time.Millisecond), time.Millisecond, scriptedOnce(&n, refused), isRefused)
		if err != nil || g == nil || g.last != refused || !errors.Is(g.cut, context.DeadlineExceeded) || g.attempts != 2 {
			t.Fatalf("retryDial() = %+v, %v, want a give-up after 2 attempts with both errors", g, err)
		}
	})
}

func TestKeptDialer(t *testing.T) {
	kept, peer := net.Pipe()
	defer peer.Close()
	var n int
	d := &keptDialer{what: "test", dial: scriptedOnce(&n, nil), first: kept}
	if c, err := d.Dial(context.Background()); c != kept || err != nil || n != 0 {
		t.Fatalf("first Dial() = %v, %v (%d dials), want the kept connection", c, err, n)
	}
	c, err := d.Dial(context.Background())
	if c == nil || err != nil || n != 1 {
		t.Fatalf("second Dial() = %v, %v (%d dials), want a new connection", c, err, n)
	}
	c.Close()
	if err := d.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if _, err := d.Dial(context.Background()); !errors.Is(err, net.ErrClosed) || err.Error() != "dial test: dialer is closed: use of closed network connection" {
		t.Fatalf("Dial() after Close = %v, want net.ErrClosed", err)
	}

	unused, peer2 := net.Pipe()
	defer peer2.Close()
	d = &keptDialer{what: "test", dial: scriptedOnce(&n), first: unused}
	if err := d.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if _, err := unused.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("Write on the kept connection after Close = %v, want it closed", err)
	}
}
