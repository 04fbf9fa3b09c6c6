package transport

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"
)

// dialOnce makes one connection attempt.
type dialOnce func(ctx context.Context) (net.Conn, error)

// gaveUp describes the attempts of a retryDial that ctx ended.
type gaveUp struct {
	// attempts counts the dials made, the one ctx cut short included.
	attempts int
	// took is the time since the first dial, rounded to milliseconds.
	took time.Duration
	// last is the last "not ready" error; nil when ctx cut the first
	// attempt short.
	last error
	// cut is the error of the attempt ctx cut short; nil when ctx ended
	// during a pause between attempts.
	cut error
}

// retryDial calls dial until it returns a connection, fails with an error
// notReady rejects, or ctx ends, pausing interval between attempts. It
// returns the connection; or, for an error notReady rejects while ctx is
// live, that error as dial returned it; or, when ctx ends, a gaveUp for the
// caller to word (with ctx.Err()).
func retryDial(ctx context.Context, interval time.Duration, dial dialOnce, notReady func(error) bool) (net.Conn, *gaveUp, error) {
	var lastErr error
	start := time.Now()
	for attempt := 1; ; attempt++ {
		c, err := dial(ctx)
		if err == nil {
			return c, nil, nil
		}
		if ctx.Err() == nil && !notReady(err) {
			return nil, nil, err
		}
		if ctx.Err() == nil {
			lastErr = err
			select {
			case <-time.After(interval):
				continue
			case <-ctx.Done():
			}
			err = nil // ctx ended between two attempts
		}
		return nil, &gaveUp{attempts: attempt, took: time.Since(start).Round(time.Millisecond), last: lastErr, cut: err}, nil
	}
}

// keptDialer is a Dialer whose first Dial returns the connection its
// Connect function made (so the agent never sees an empty probe
// connection) and whose later Dials call dial.
type keptDialer struct {
	what string // "vsock cid 3 port 1024", for errors
	dial dialOnce

	mu     sync.Mutex
	first  net.Conn // the Connect function's connection, until a Dial takes it
	closed bool
}

func (d *keptDialer) Dial(ctx context.Context) (net.Conn, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, fmt.Errorf("dial %s: dialer is closed: %w", d.what, net.ErrClosed)
	}
	if c := d.first; c != nil {
		d.first = nil
		d.mu.Unlock()
		return c, nil
	}
	d.mu.Unlock()
	return d.dial(ctx)
}

// Close closes the kept connection if no Dial took it.
func (d *keptDialer) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.first != nil {
		err := d.first.Close()
		d.first = nil
		return err
	}
	return nil
}
