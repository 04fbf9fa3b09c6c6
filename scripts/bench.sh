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
# shellcheck source=scripts/lib/attest.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/attest.sh"

# --- cc-kbs part (docs/performance.md, "cc-kbs") ---------------------------
# Full RCAR handshakes against the crypto floor: runs kbs/server's
# BenchmarkRCARHandshake (KBS_BENCHTIME per figure, default 3s) and prints
# handshakes/s and p50/p99 latency at 1, 16 and 64 clients, the bare ECDSA
# P-384 verify rate measured in the same run, and the handshake rate as a
# share of it: wall-clock (in-process clients share the CPUs), CPU-time
# (robust to other load) and server-only CPU (guests in a child process),
# against the target of 60%. Runs after the VM figures; BENCH_ONLY=kbs
# runs just this part, BENCH_KBS=0 skips it.
kbs_bench() {
	local out
	out=$(mktemp)
	echo
	echo "cc-kbs: RCAR handshakes (go test ./kbs/server -bench BenchmarkRCARHandshake, ${KBS_BENCHTIME:-3s} per figure)"
	if ! (cd "$REPO" && "${GO:-go}" test ./kbs/server -run '^$' -bench '^BenchmarkRCARHandshake$' \
		-benchtime "${KBS_BENCHTIME:-3s}") >"$out" 2>&1; then
		cat "$out" >&2
		rm -f "$out"
		die "cc-kbs benchmark failed (output above)"
	fi
	awk '
	/^BenchmarkRCARHandshake\// {
		name = $1; sub(/^BenchmarkRCARHandshake\//, "", name); sub(/-[0-9]+$/, "", name)
		for (i = 3; i < NF; i += 2) m[name, $(i + 1)] = $i
		seen[name] = 1
	}
	END {
		printf "  %-8s %13s %8s %8s %17s %13s %13s %14s\n", "clients", "handshakes/s", "p50 ms", "p99 ms", "floor verifies/s", "wall %-floor", "CPU %-floor", "verify % CPU"
		k = split("1 16 64", cs, " ")
		for (j = 1; j <= k; j++) {
			n = "clients=" cs[j]
			if (!(n in seen)) continue
			printf "  %-8s %13.0f %8.2f %8.2f %17.0f %12.1f%% %12.1f%% %13.1f%%\n", cs[j], m[n, "handshakes/s"], m[n, "p50-ms"], m[n, "p99-ms"], m[n, "floor-verifies/s"], m[n, "%-of-floor"], m[n, "cpu-%-of-floor"], m[n, "verify-%-of-cpu"]
		}
		printf "  server alone (guests in a child process; handshake = auth + attest, the resource fetch measured after it):\n"
		printf "  %-8s %24s %22s %22s %23s %23s %26s\n", "clients", "server CPU ms/handshake", "server CPU %-of-floor", "verify % server CPU", "guest CPU ms/handshake", "server CPU ms/resource", "verify % CPU with resource"
		worst = -1; judged = ""
		k = split("16 64", cs, " ")
		for (j = 1; j <= k; j++) {
			n = "server-cpu/clients=" cs[j]
			if (!(n in seen)) continue
			v = m[n, "verify-%-of-server-cpu"]; if (worst < 0 || v < worst) worst = v
			judged = judged (judged == "" ? "" : ", ") sprintf("%.1f%% at %s clients", v, cs[j])
			printf "  %-8s %24.3f %21.1f%% %21.1f%% %23.3f %23.3f %25.1f%%\n", cs[j], m[n, "server-cpu-ms/handshake"], m[n, "server-cpu-%-of-floor"], v, m[n, "guest-cpu-ms/handshake"], m[n, "server-cpu-ms/resource"], m[n, "verify-%-of-server-cpu-with-resource"]
		}
		printf "  bare ECDSA P-384 verify, all CPUs: %.0f verifies/s\n", m["ecdsa-p384-verify", "verifies/s"]
		printf "  target: handshakes >= 60%% of the verify rate on the same CPUs (share of the server CPU in the verify, every client count): %s: %s\n", judged, (worst >= 60 ? "met" : "MISSED")
	}' "$out"
	# KBS_BENCH_RAW=FILE keeps go test's output (e.g. for docs/performance.md).
	if [[ -n ${KBS_BENCH_RAW:-} ]]; then cp "$out" "$KBS_BENCH_RAW"; fi
	rm -f "$out"
}
if [[ ${BENCH_ONLY:-} == kbs ]]; then
	kbs_bench
	exit 0
fi
# ---------------------------------------------------------------------------

# --- attested path (docs/performance.md, "Attested path") -----------------
# Runs after the VM figures, in the same registry and containerd, with a
# cc-kbs (sim TEE chain) and a second shim config (tee = "sim"):
#  1. BENCH_ATTEST_RUNS (default BENCH_RUNS) attested runs of the
#     encrypted, signed busybox image, plus a warm-up: agent ready ->
#     /cc/attestation "allowed" and the attempt's duration_ns.
#  2. One attested run each of a 50 MiB and a 200 MiB encrypted image
#     (busybox plus an uncompressed filler layer), guest memory 1024 MiB:
#     pull-and-decrypt MiB/s in the guest and cc-agent's peak RSS.
#  3. The same library on the host against `sha256sum` + `tar -x` of the
#     same layers (guest/image BenchmarkPullDecryptVsShell).
#  4. The agent policy's per-request cost (guest/policy BenchmarkAllow*).
# Figures only: nothing here fails on a missed target. BENCH_ONLY=attested
# runs just this part (after starting the environment); BENCH_ATTESTED=0
# skips it.
attested_bench() {
	local runs=${BENCH_ATTEST_RUNS:-$RUNS} cfg big mib ref enc ann ns0=$NS
	[[ $runs =~ ^[1-9][0-9]*$ ]] || die "BENCH_ATTEST_RUNS=$runs: want a positive integer"
	echo
	log_step "attested path: cc-kbs, sim TEE, encrypted and signed images"
	kbs_start
	cfg="$SCRATCH/cc-attested.toml"
	big="$SCRATCH/cc-attested-1g.toml"
	SHIM_CONFIG=$cfg write_shim_config
	SHIM_CONFIG=$big SHIM_HYPERVISOR_EXTRA=$'tee = "sim"\nmemory_mib = 1024' write_shim_config
	kbs_trust_guest
	attested_image "$IMAGE_REF" "$REG_ADDR/secure/busybox:enc" kbs:///default/key/busybox bench
	write_init_data kbs:///default/security-policy/bench
	ctr image pull --plain-http --snapshotter cc "$ENC_REF" >"$SCRATCH/pull-enc.log" 2>&1 ||
		die "ctr image pull --snapshotter cc $ENC_REF failed: $(tail -n 5 "$SCRATCH/pull-enc.log")"
	attested_run "$cfg" "$INIT_DATA_ANNOTATION" "$ENC_REF" --runs "$runs" \
		--title "attestation phase: encrypted, signed busybox, guest 512 MiB"
	for mib in 50 200; do
		ref=$(timeout 300 "$BIN/coffer-bench" --push-filler-mib "$mib" --registry "$REG_ADDR" --repo "filler:$mib") ||
			die "push the $mib MiB filler image to $REG_ADDR"
		enc="$REG_ADDR/secure/filler:$mib"
		CTR_TIMEOUT=600 attested_image "$ref" "$enc" "kbs:///default/key/filler$mib" "filler$mib"
		write_init_data "kbs:///default/security-policy/filler$mib"
		ann=$INIT_DATA_ANNOTATION
		# A namespace of its own: in the shared one, containerd reuses the
		# cc snapshot chain unpacked for secure/busybox:enc (same plaintext
		# busybox layer), and the shim then pins that image's encrypted
		# layer digest, which this image's (other key) does not match.
		NS="$ns0-f$mib" ctr image pull --plain-http --snapshotter cc "$enc" >"$SCRATCH/pull-enc.log" 2>&1 ||
			die "ctr image pull --snapshotter cc $enc failed: $(tail -n 5 "$SCRATCH/pull-enc.log")"
		NS="$ns0-f$mib" attested_run "$big" "$ann" "$enc" --runs 1 --warmup=false \
			--title "pull and decrypt in the guest: $mib MiB encrypted image (uncompressed tar layer), guest 1024 MiB"
	done
	echo
	log_step "pull and decrypt on the host, same library (guest/image), against sha256sum + tar -x of the same layers"
	(cd "$REPO" && go test ./guest/image -run '^$' -bench '^BenchmarkPullDecryptVsShell$' -benchtime "${BENCH_PULL_BENCHTIME:-5x}") |
		grep -E '^(Benchmark|cpu:)' || die "go test ./guest/image -bench BenchmarkPullDecryptVsShell failed"
	echo "  target: host pull+decrypt MiB/s >= 60% of shell-MiB/s (column %-of-shell: fastest pull against fastest interleaved shell round)"
	echo
	log_step "agent policy: one decision per request (guest/policy, host CPU; no policy = no decision)"
	(cd "$REPO" && go test ./guest/policy -run '^$' -bench '^BenchmarkAllow' -benchtime "${BENCH_POLICY_BENCHTIME:-2s}") |
		grep -E '^(Benchmark|cpu:)' || die "go test ./guest/policy -bench BenchmarkAllow failed"
	echo "  target: < 1 ms added per request (ns/op above, host CPU, not TCG)"
}

# attested_run SHIM_CONFIG ANNOTATION IMAGE ARGS... runs coffer-bench
# --attested in this environment.
attested_run() {
	local cfg=$1 ann=$2 img=$3 rc=0
	shift 3
	timeout --kill-after=10 1800 "$BIN/coffer-bench" --attested \
		--ctr "$BIN/ctr" --address "$ADDRESS" --namespace "$NS" --containerd-log "$CTD_LOG" \
		--image "$img" --shim-config "$cfg" --shim-binary "$BIN/containerd-shim-cc-v2" \
		--fifo-dir "$FIFO_DIR" --floor-init "$SCRATCH/poweroff-init" --work-dir "$SCRATCH" \
		--annotation "io.coffer.cc.init-data=$ann" "$@" || rc=$?
	case $rc in
	0) ;;
	124 | 137) die "coffer-bench --attested did not finish within 1800s" ;;
	*) die "coffer-bench --attested failed (exit status $rc)" ;;
	esac
}
# ---------------------------------------------------------------------------

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
		kbs_teardown
		env_teardown
		local ids=() i
		for ((i = 0; i <= RUNS; i++)); do ids+=("bench-$i"); done
		for ((i = 0; i <= ${BENCH_ATTEST_RUNS:-$RUNS}; i++)); do ids+=("bench-att-$i"); done
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

if [[ ${BENCH_ONLY:-} == attested ]]; then
	attested_bench
	exit 0
fi

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

# cc-kbs part (defined above).
[[ ${BENCH_KBS:-1} == 0 ]] || kbs_bench

# Attested path (defined above).
[[ ${BENCH_ATTESTED:-1} == 0 ]] || attested_bench

# --- CRI pods (docs/performance.md, "CRI pods") ------------------------------
# Through crictl against containerd's CRI plugin (its own containerd, CNI
# bridge and registry, started by the integration harness): runp → first
# container running and → all running, for pods of 1 and 3 containers,
# and the pod VM's host memory (QEMU RSS). BENCH_CRI=0 skips it.
cri_bench() {
	printf '\nCRI pods (crictl runp --runtime cc, busybox containers, %s runs each):\n' "${BENCH_CRI_RUNS:-3}"
	local out
	out=$(mktemp)
	(cd "$REPO" && COFFER_REQUIRE_E2E=1 go test -count=1 -run '^$' -bench 'BenchmarkCRIPodStart' \
		-benchtime "${BENCH_CRI_RUNS:-3}x" -timeout 30m ./integration/) >"$out" 2>&1 ||
		die "CRI pod benchmark failed: $(tail -n 20 "$out")"
	awk '/^BenchmarkCRIPodStart/ {
		name = $1; sub(/^BenchmarkCRIPodStart\//, "", name); sub(/-[0-9]+$/, "", name)
		for (i = 3; i < NF; i++) m[$(i + 1)] = $i
		printf "  %-14s runp->first running %8.0f ms   runp->all running %8.0f ms   QEMU RSS %6.1f MiB\n", name, m["ms-to-first-running"], m["ms-to-all-running"], m["qemu-rss-MiB"]
	}' "$out"
	rm -f "$out"
}
[[ ${BENCH_CRI:-1} == 0 ]] || cri_bench

# --- measuring the guest (docs/performance.md, "Measurement") -------------
# `ccctl measure` on the project's own guest: sim, SNP (synthetic 4 MiB
# AmdSev firmware) and TDX MRTD (Debian's OVMF) (cmd/ccctl
# BenchmarkMeasureGuest). BENCH_MEASURE=0 skips it.
measure_bench() {
	printf '\nccctl measure on build/guest:\n'
	(cd "$REPO" && go test -count=1 -run '^$' -bench 'BenchmarkMeasureGuest' -benchtime 5x ./cmd/ccctl/) 2>&1 |
		awk '/^BenchmarkMeasureGuest/ {name = $1; sub(/^BenchmarkMeasureGuest\//, "", name); sub(/-[0-9]+$/, "", name); printf "  %-10s %8.1f ms\n", name, $3 / 1e6}'
}
[[ ${BENCH_MEASURE:-1} == 0 ]] || measure_bench
