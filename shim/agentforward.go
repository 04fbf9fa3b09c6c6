package shim

import (
	"context"
	"fmt"
	"net"

	"github.com/containerd/log"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/forward"
	"github.com/cofferhq/coffer/vmm"
)

// agentForwards reports whether cfg carries network.forwards over the
// agent transport: with network.mode "none" there is no guest network, so
// forwards can only go that way (docs/configuration.md).
func agentForwards(cfg *Config) bool {
	return cfg.Network.Mode == "none" && len(cfg.Network.Forwards) > 0
}

// serveForwards answers the guest's forwarded connections until the
// sandbox stops: on virtio-serial the yamux streams the guest opens; on
// hybrid vsock the VMM's connections to "<vsock socket>_<port>"; on
// vhost-vsock AF_VSOCK connections from the guest's CID; the port being
// transport.GuestVsockPort(guest CID). Each is dialed to the
// network.forwards entry its header names (forward.Server). It fails when
// the listener cannot be opened.
func (sb *sandbox) serveForwards(ctx context.Context, cfg *Config, kind transport.Kind, vc *vmm.Config) error {
	l, err := forwardListener(sb.dialer, kind, vc)
	if err != nil {
		return fmt.Errorf("serve network.forwards over the agent transport: %w", err)
	}
	srv := &forward.Server{
		Endpoints: cfg.Network.Forwards,
		Log:       log.G(ctx).WithField("sandbox", sb.id),
	}
	go func() {
		if err := srv.Serve(sb.ctx, l); err != nil {
			log.G(sb.ctx).WithError(err).Warn("network.forwards: stopped serving the guest's forwarded connections")
		}
	}()
	return nil
}

// forwardListener opens the host end of guest-opened connections on the
// agent transport kind (see transport.GuestVsockPort).
func forwardListener(d transport.Dialer, kind transport.Kind, vc *vmm.Config) (net.Listener, error) {
	switch kind {
	case transport.KindHybridVsock:
		return transport.ListenHybridVsock(vc.Agent.SocketPath, transport.GuestVsockPort(vc.Agent.GuestCID))
	case transport.KindVsock:
		return transport.ListenVsockFrom(transport.GuestVsockPort(vc.Agent.GuestCID), vc.Agent.GuestCID)
	default:
		a, ok := d.(transport.GuestAcceptor)
		if !ok {
			return nil, fmt.Errorf("the %s agent transport does not carry guest-opened connections", kind)
		}
		return a.GuestListener(), nil
	}
}
