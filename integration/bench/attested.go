package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// phaseAllowed is the /cc/attestation phase published when the KBS
// accepted the guest's evidence (guest/aa).
const phaseAllowed = "allowed"

// RunAttested measures container runs on the attested path: Config.RunArgs
// must carry the init-data annotation and the shim config a TEE (sim), so
// that the guest attests to the KBS before it pulls. With warmup, one
// unmeasured run comes first. It does Runs measured runs (no floor boots)
// and prints one progress line per run.
//
// Errors: a failed run, a run without a /cc/attestation "allowed" event
// (the shim config or the init-data did not make the guest attest), or
// the event subscription ending early.
func (b *Bench) RunAttested(ctx context.Context, progress io.Writer, warmup bool) ([]*RunSample, error) {
	var runs []*RunSample
	first := 1
	if warmup {
		first = 0
	}
	for i := first; i <= b.cfg.Runs; i++ {
		label := fmt.Sprintf("run %d/%d", i, b.cfg.Runs)
		if i == 0 {
			label = "warm-up (not counted)"
		}
		rctx, cancel := context.WithTimeout(ctx, attestedRunTimeout)
		r, err := b.runContainer(rctx, fmt.Sprintf("bench-att-%d", i))
		cancel()
		if err != nil {
			if errors.Is(rctx.Err(), context.DeadlineExceeded) {
				err = fmt.Errorf("%w (the run did not finish within %s)", err, attestedRunTimeout)
			}
			return nil, fmt.Errorf("attested %s: %w", label, err)
		}
		if err := b.events.failure(); err != nil {
			return nil, fmt.Errorf("containerd event subscription ended: %w", err)
		}
		if r.Allowed == 0 {
			return nil, fmt.Errorf("attested %s: container %s has no /cc/attestation %q event: want a shim config with hypervisor.tee = \"sim\" and init-data naming the KBS (--annotation)", label, r.ID, phaseAllowed)
		}
		fmt.Fprintf(progress, "    %-22s agent ready -> allowed %s   pull %s (%s, %.1f MiB/s)   agent peak %s\n", label,
			secs(r.Allowed-r.AgentAnswered), secs(r.PullRPC), mib(r.PullBytes), pullRate(r), mib(r.AgentPeak))
		if i == 0 {
			continue
		}
		runs = append(runs, r)
	}
	return runs, nil
}

// attestedRunTimeout bounds one attested run: a 200 MiB encrypted pull
// through QEMU's user network under TCG takes minutes.
const attestedRunTimeout = 10 * time.Minute

// pullRate is the bytes the guest fetched per second of the PullImage
// RPC, in MiB/s; 0 without a duration.
func pullRate(r *RunSample) float64 {
	if r.PullRPC <= 0 {
		return 0
	}
	return float64(r.PullBytes) / (1 << 20) / r.PullRPC.Seconds()
}

// AttestedFigures summarises attested runs (medians, minima, maxima).
type AttestedFigures struct {
	// N is the number of runs.
	N int
	// ReadyToAllowed is agent ready (the shim's Health answered) ->
	// /cc/attestation "allowed" published, host clock: InitSandbox, the
	// PullImage call reaching the guest, and the whole attestation.
	ReadyToAllowed [3]time.Duration
	// Attempt is the "allowed" event's duration_ns: the successful
	// attempt's auth, evidence and attest round trips, guest clock.
	Attempt [3]time.Duration
	// Pull is the PullImage RPC (attestation included when it happens
	// inside the first pull, see ReadyToAllowed) and PullAfterAllowed the
	// part after "allowed": policy and key fetch, fetch, verify, decrypt,
	// unpack.
	Pull, PullAfterAllowed [3]time.Duration
	// PullBytes is the median of bytes fetched (compressed, encrypted).
	PullBytes uint64
	// RateMiBs is bytes fetched / (pull done - allowed), MiB/s, median:
	// the pull-and-decrypt throughput without the attestation.
	RateMiBs [3]float64
	// AgentPeak and AgentRSS are cc-agent's VmHWM and VmRSS at VM stop,
	// bytes: median, min, max.
	AgentPeak, AgentRSS [3]uint64
	// FirstOutput is ctr run -> first output line.
	FirstOutput [3]time.Duration
}

// SummariseAttested computes AttestedFigures; it returns false without
// runs.
func SummariseAttested(runs []*RunSample) (AttestedFigures, bool) {
	if len(runs) == 0 {
		return AttestedFigures{}, false
	}
	f := AttestedFigures{N: len(runs)}
	var ready, attempt, pull, after, first []time.Duration
	var peak, rss, bytes []uint64
	var rates []float64
	for _, r := range runs {
		ready = append(ready, r.Allowed-r.AgentAnswered)
		attempt = append(attempt, r.AllowedAttempt)
		pull = append(pull, r.PullRPC)
		a := r.PullDone - r.Allowed
		after = append(after, a)
		if a > 0 {
			rates = append(rates, float64(r.PullBytes)/(1<<20)/a.Seconds())
		}
		first = append(first, r.FirstOutput)
		peak = append(peak, r.AgentPeak)
		rss = append(rss, r.AgentRSS)
		bytes = append(bytes, r.PullBytes)
	}
	f.ReadyToAllowed = triple(ready)
	f.Attempt = triple(attempt)
	f.Pull = triple(pull)
	f.PullAfterAllowed = triple(after)
	f.FirstOutput = triple(first)
	f.AgentPeak = tripleBytes(peak)
	f.AgentRSS = tripleBytes(rss)
	f.PullBytes, _ = MedianBytes(bytes)
	if len(rates) > 0 {
		slices.Sort(rates)
		n := len(rates)
		med := rates[n/2]
		if n%2 == 0 {
			med = (rates[n/2-1] + rates[n/2]) / 2
		}
		f.RateMiBs = [3]float64{med, rates[0], rates[n-1]}
	}
	return f, true
}

// triple is median, min, max of a non-empty ds.
func triple(ds []time.Duration) [3]time.Duration {
	med, lo, hi, _ := stats(ds)
	return [3]time.Duration{med, lo, hi}
}

// tripleBytes is median, min, max of a non-empty xs.
func tripleBytes(xs []uint64) [3]uint64 {
	med, _ := MedianBytes(xs)
	return [3]uint64{med, slices.Min(xs), slices.Max(xs)}
}

// WriteAttested prints the figures of attested runs under title.
func WriteAttested(w io.Writer, title string, f AttestedFigures) error {
	d := func(t [3]time.Duration) string {
		return fmt.Sprintf("%9s %9s %9s", secs(t[0]), secs(t[1]), secs(t[2]))
	}
	m := func(t [3]uint64) string { return fmt.Sprintf("%9s %9s %9s", mib(t[0]), mib(t[1]), mib(t[2])) }
	_, err := fmt.Fprintf(w, `%s (%d runs; median, min, max)
  ctr run -> first output line                              %s
  attestation: agent ready -> /cc/attestation allowed (host) %s
  attestation: successful attempt, duration_ns of allowed   %s
  PullImage RPC (%s fetched, encrypted)              %s
  pull after allowed: policy, keys, fetch, verify, decrypt, unpack %s
  pull-and-decrypt throughput after allowed, MiB/s          %9.1f %9.1f %9.1f
  cc-agent peak RSS (VmHWM, whole VM life)                   %s
  cc-agent RSS at VM stop (policy loaded)                    %s
`, title, f.N, d(f.FirstOutput), d(f.ReadyToAllowed), d(f.Attempt), mib(f.PullBytes), d(f.Pull), d(f.PullAfterAllowed),
		f.RateMiBs[0], f.RateMiBs[1], f.RateMiBs[2], m(f.AgentPeak), m(f.AgentRSS))
	return err
}
