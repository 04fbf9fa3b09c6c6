#!/usr/bin/env bash
# `make bench`: Coffer's start-up and memory figures (docs/performance.md).
#
# Starts the same scratch environment as `make demo` (registry, private
# containerd, busybox test image), then runs integration/cmd/coffer-bench,
# which measures BENCH_RUNS (default 5) `ctr run`s of the busybox image and
# as many boots of the bare-VM floor, interleaved, and prints medians, the
# ratio and peak RSS next to their targets. Missing a target is reported,
# not a failure; any error is. Needs root and `make deps tools build guest`
# (the Makefile runs those first). BENCH_TIMELINE=1 adds the median run's
# timeline (see below).
set -euo pipefail

# shellcheck source=scripts/lib/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/env.sh"

RUNS=${BENCH_RUNS:-5}
# BENCH_TIMELINE=1 also prints the median run's timeline: host milestones
# and every guest console line with the time the host saw it.
timeline_flag=()
[[ -n ${BENCH_TIMELINE:-} && ${BENCH_TIMELINE} != 0 ]] && timeline_flag=(--timeline)
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS=$RUNS: want a positive integer"
# Bound on the whole measurement, seconds: a TCG run takes about 10 s.
BENCH_TIMEOUT=$((120 + RUNS * 2 * 60))

on_exit() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if [[ -n ${SCRATCH:-} ]]; then
		local pid
		# Floor VMs live in the scratch dir; the bench kills them on errors,
		# this catches a bench that was itself killed.
		for pid in $(qemu_pids_mentioning "$SCRATCH/"); do
			echo "teardown: killing leftover floor VM $pid" >&2
			kill -KILL "$pid" 2>/dev/null
		done
		env_teardown
		local ids=() i
		for ((i = 0; i <= RUNS; i++)); do ids+=("bench-$i"); done
		if ! env_leftovers "${ids[@]}"; then
			echo "ERROR: the bench left the processes or directories above behind" >&2
			rc=1
		fi
	fi
	((rc == 0)) || echo "make bench FAILED (exit status $rc)" >&2
	exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

go build -o "$BIN/coffer-testimage" "$REPO/integration/cmd/coffer-testimage" ||
	die "build integration/cmd/coffer-testimage"
go build -o "$BIN/coffer-bench" "$REPO/integration/cmd/coffer-bench" ||
	die "build integration/cmd/coffer-bench"
env_init bench
# The floor VM's /init: static, stripped, like cc-agent.
CGO_ENABLED=0 go build -trimpath -ldflags '-s -w -buildid=' -o "$SCRATCH/poweroff-init" \
	"$REPO/integration/bench/poweroff" || die "build integration/bench/poweroff (the floor VM's /init)"
env_start

bench_rc=0
timeout --kill-after=10 "$BENCH_TIMEOUT" "$BIN/coffer-bench" \
	--ctr "$BIN/ctr" --address "$ADDRESS" --namespace "$NS" --containerd-log "$CTD_LOG" \
	--image "$IMAGE_REF" --shim-config "$SHIM_CONFIG" --shim-binary "$BIN/containerd-shim-cc-v2" \
	--fifo-dir "$FIFO_DIR" --floor-init "$SCRATCH/poweroff-init" --work-dir "$SCRATCH" \
	--runs "$RUNS" "${timeline_flag[@]}" || bench_rc=$?
case $bench_rc in
0) ;;
124 | 137) die "coffer-bench did not finish within ${BENCH_TIMEOUT}s" ;;
*) die "coffer-bench failed (exit status $bench_rc)" ;;
esac

# Host-side cost of pulling the same image with containerd's overlayfs
# snapshotter (layers fetched and unpacked on the host) and with cc (no
# layer on the host): bytes written under the content store and the
# snapshotter root, and pull wall time. Each pull runs in its own
# namespace, and the overlayfs copy is removed (with a synchronous GC)
# before the cc pull, so neither pull reuses the other's blobs.
tree_bytes() { find "$@" -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
pull_cost() { # NAMESPACE SNAPSHOTTER ROOT... -> "bytes seconds"
	local ns=$1 sn=$2
	shift 2
	local before after start end
	before=$(tree_bytes "$SCRATCH/root/io.containerd.content.v1.content" "$@")
	start=$(date +%s.%N)
	"$BIN/ctr" --address "$ADDRESS" --namespace "$ns" image pull --plain-http --snapshotter "$sn" "$IMAGE_REF" \
		>"$SCRATCH/pull-$sn.log" 2>&1 || die "ctr image pull --snapshotter $sn failed: $(tail -n 5 "$SCRATCH/pull-$sn.log")"
	end=$(date +%s.%N)
	after=$(tree_bytes "$SCRATCH/root/io.containerd.content.v1.content" "$@")
	echo "$((after - before)) $(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", b - a}')"
}
read -r ov_bytes ov_secs < <(pull_cost bench-overlay overlayfs "$SCRATCH/root/io.containerd.snapshotter.v1.overlayfs")
"$BIN/ctr" --address "$ADDRESS" --namespace bench-overlay image rm --sync "$IMAGE_REF" >/dev/null ||
	die "remove the overlayfs copy of $IMAGE_REF"
read -r cc_bytes cc_secs < <(pull_cost bench-cc cc "$SCRATCH/ccsn")
"$BIN/ctr" --address "$ADDRESS" --namespace bench-cc image rm --sync "$IMAGE_REF" >/dev/null || true
printf '\nHost-side pull of %s (content store + snapshotter root):\n' "$IMAGE_REF"
printf '  %-10s %12s bytes written  %7ss\n' overlayfs "$ov_bytes" "$ov_secs" cc "$cc_bytes" "$cc_secs"
awk -v o="$ov_bytes" -v c="$cc_bytes" -v os="$ov_secs" -v cs="$cc_secs" \
	'BEGIN {printf "  cc / overlayfs: bytes %.4f, time %.2f\n", (o > 0 ? c / o : 0), (os > 0 ? cs / os : 0)}'
# The busybox layer is 1.1 MB and its manifest and config are under 2 KB:
# after the cc pull (and the overlayfs copy's removal), any content-store
# blob of 64 KiB or more would be a layer.
layer_bytes=$(find "$SCRATCH/root/io.containerd.content.v1.content/blobs" -type f -size +63k -printf '%s\n' 2>/dev/null |
	awk '{s += $1} END {print s + 0}')
printf '  layer bytes in the host content store after the cc pull: %s (target 0: %s)\n' "$layer_bytes" \
	"$( ((layer_bytes == 0)) && echo met || echo MISSED)"
