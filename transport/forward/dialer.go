package forward

import (
	"context"
	"fmt"
	"net"
	"time"
)

// Dialer is the guest side: DialContext opens a forwarded connection over
// the agent transport for an Address, and a TCP connection otherwise. It
// is meant as the DialContext of the guest's image puller and attestation
// agent, after their dial-rewrite tables turned a forwarded host address
// into an Address.
type Dialer struct {
	// Open opens a raw connection to the host's forward server on the
	// agent transport (transport.HostOpener's OpenHost, or
	// transport.DialHostVsock). Nil makes every forward fail with an
	// error saying the agent transport carries no forwards.
	Open func(ctx context.Context) (net.Conn, error)
	// Net dials addresses that are not an Address; the zero value is a
	// plain net.Dialer.
	Net net.Dialer
}

// replyTimeout bounds the wait for the host's reply: the host dials the
// endpoint within DefaultDialTimeout and answers at once.
const replyTimeout = 2*DefaultDialTimeout + 5*time.Second

// DialContext dials addr. For an Address ("agent-forward/<i>") it opens a
// connection with Open, writes Header{Index: i} and waits for the host's
// reply: it returns the connection after StatusOK, and otherwise an error
// naming the forward and carrying the host's message (wrapping
// ErrRefused or ErrDialFailed). network must then be "tcp", "tcp4" or
// "tcp6". A malformed Address is an error wrapping ErrUnknownForward. Any
// other addr is dialed with Net.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	i, ok, err := ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	if !ok {
		return d.Net.DialContext(ctx, network, addr)
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("dial %s: forwards carry TCP only, not %q", addr, network)
	}
	if d.Open == nil {
		return nil, fmt.Errorf("dial %s: this guest's agent transport carries no forwards: %w", addr, ErrUnknownForward)
	}
	c, err := d.Open(ctx)
	if err != nil {
		return nil, fmt.Errorf("dial %s: open a connection to the host on the agent transport: %w", addr, err)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	c.SetDeadline(time.Now().Add(replyTimeout))
	err = WriteHeader(c, Header{Index: i})
	if err == nil {
		err = ReadReply(c)
	}
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = c.SetDeadline(time.Time{})
	}
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("dial %s: %w (%v)", addr, ctx.Err(), err)
		}
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return c, nil
}
