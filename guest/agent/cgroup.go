package agent

import (
	"context"
	"fmt"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

// requireCgroup2 fails with ErrFailedPrecondition unless /sys/fs/cgroup is
// the cgroup v2 unified hierarchy, which the guest mounts.
func requireCgroup2(what string) error {
	if mode := cgroups.Mode(); mode != cgroups.Unified {
		return fmt.Errorf("%s needs cgroup v2 (unified hierarchy) mounted at /sys/fs/cgroup, found %s: %w",
			what, modeName(mode), errdefs.ErrFailedPrecondition)
	}
	return nil
}

func modeName(m cgroups.CGMode) string {
	switch m {
	case cgroups.Legacy:
		return "cgroup v1 (legacy)"
	case cgroups.Hybrid:
		return "cgroup v1 with a v2 hierarchy beside it (hybrid)"
	case cgroups.Unified:
		return "cgroup v2 (unified)"
	}
	return "no cgroup filesystem"
}

// stats returns the io.containerd.cgroups.v2.Metrics of container id.
func (a *Agent) stats(id string) (*anypb.Any, error) {
	if err := validateID("container_id", id); err != nil {
		return nil, err
	}
	if _, err := a.getContainer(id); err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	if err := requireCgroup2("stats"); err != nil {
		return nil, err
	}
	m, err := cgroup2.Load(cgroupPath(id))
	if err != nil {
		return nil, fmt.Errorf("stats of container %q: load cgroup %s: %w", id, cgroupPath(id), err)
	}
	st, err := m.Stat()
	if err != nil {
		return nil, fmt.Errorf("stats of container %q: read cgroup %s: %w", id, cgroupPath(id), err)
	}
	anyStats, err := typeurl.MarshalAnyToProto(st)
	if err != nil {
		return nil, fmt.Errorf("stats of container %q: encode metrics: %w", id, err)
	}
	return anyStats, nil
}

// watchOOM forwards oom_kill increments of c's memory.events to
// Agent.oomCh until the cgroup is emptied or removed (runc delete removes
// it, which ends cgroup2.Manager.EventChan). On cgroup v1 it does
// nothing (GetOOMEvent then never returns an event).
func (a *Agent) watchOOM(c *container) {
	log := a.log.WithField("container_id", c.id)
	if requireCgroup2("oom watch") != nil {
		log.Debug("no OOM watch: cgroup v2 is not mounted")
		return
	}
	m, err := cgroup2.Load(cgroupPath(c.id))
	if err != nil {
		log.WithError(err).Warn("no OOM watch: load cgroup")
		return
	}
	events, errs := m.EventChan()
	go func() {
		var kills uint64
		for {
			select {
			case e := <-events:
				if e.OOMKill > kills {
					kills = e.OOMKill
					select {
					case a.oomCh <- c.id:
						log.Warn("process killed by the OOM killer")
					default:
						log.Warn("process killed by the OOM killer; event dropped, nobody calls GetOOMEvent")
					}
				}
			case err, ok := <-errs:
				if !ok {
					return
				}
				if err != nil {
					log.WithError(err).Warn("OOM watch failed")
				}
			}
		}
	}()
}

// oomEvent blocks until a container's process is OOM-killed, ctx is done
// or Serve returns.
func (a *Agent) oomEvent(ctx context.Context) (string, error) {
	select {
	case id := <-a.oomCh:
		return id, nil
	case <-ctx.Done():
		return "", ctx.Err()
	case <-a.done:
		return "", fmt.Errorf("get oom event: agent is shutting down: %w", errdefs.ErrUnavailable)
	}
}
