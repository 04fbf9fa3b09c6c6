#!/usr/bin/env bash
# `make demo`: run one container in a Coffer VM, end to end, in a scratch
# environment, then tear everything down and check nothing is left.
#
# Steps: start a distribution registry and a private containerd (scratch
# dir under /tmp), push the busybox test image, `ctr image pull` it, then
#   ctr run --rm --snapshotter cc --runtime io.containerd.cc.v2 --runtime-config-path <cfg> \
#       <ref> demo-1 sh -c 'echo "hello from a Coffer VM: $(uname -r)"'
# The shim boots a QEMU VM, cc-agent (PID 1 in the guest) pulls the image
# inside the guest and runs it with runc; stdout comes back through
# containerd. Needs root and `make deps tools build guest` (the Makefile
# runs those first).
set -euo pipefail

# shellcheck source=scripts/lib/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/env.sh"

ID=demo-1
# Bound on the whole `ctr run` (VM boot + pull + run + teardown), seconds.
RUN_TIMEOUT=150

# fmt_dur turns a Go duration ("3.912345678s", "850.2ms", "1m2s") into
# seconds with two decimals ("3.91s").
fmt_dur() {
	awk -v d="$1" 'BEGIN {
		s = 0
		while (match(d, /^[0-9.]+(h|ms|us|µs|ns|m|s)/)) {
			tok = substr(d, 1, RLENGTH); d = substr(d, RLENGTH + 1)
			n = tok + 0; u = tok; sub(/^[0-9.]+/, "", u)
			f = (u == "h") ? 3600 : (u == "m") ? 60 : (u == "s") ? 1 : (u == "ms") ? 1e-3 : (u == "ns") ? 1e-9 : 1e-6
			s += n * f
		}
		printf "%.2fs", s
	}'
}

# field LINE KEY prints the value of KEY=value in a logrus text line.
field() { grep -o "[[:space:]]$2=[^[:space:]]*" <<<"$1" | head -n1 | cut -d= -f2- | tr -d '"'; }

# log_line OFFSET MSG prints the first containerd log line after byte
# OFFSET whose msg is MSG.
log_line() { tail -c "+$(($1 + 1))" "$CTD_LOG" | grep -m1 -F "msg=\"$2\"" || true; }

on_exit() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if [[ -n ${SCRATCH:-} ]]; then
		env_teardown
		if env_leftovers "$ID"; then
			((rc == 0)) && log_step "torn down: containerd and the registry stopped, scratch dir removed; no QEMU process and no $(vm_state_dir "$ID") left"
		else
			echo "ERROR: the demo left the processes or directories above behind" >&2
			rc=1
		fi
	fi
	((rc == 0)) || echo "make demo FAILED (exit status $rc)" >&2
	exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

go build -o "$BIN/coffer-testimage" "$REPO/integration/cmd/coffer-testimage" ||
	die "build integration/cmd/coffer-testimage (the busybox test image builder)"
env_init demo
env_start

log_step "running a container in a VM:"
echo "    ctr run --rm --snapshotter cc --runtime io.containerd.cc.v2 --runtime-config-path $SHIM_CONFIG \\"
echo "        $IMAGE_REF $ID sh -c 'echo \"hello from a Coffer VM: \$(uname -r)\"'"
offset=$(stat -c %s "$CTD_LOG")
CTR_TIMEOUT=$RUN_TIMEOUT ctr run --rm --snapshotter cc --runtime io.containerd.cc.v2 \
	--runtime-config-path "$SHIM_CONFIG" --fifo-dir "$FIFO_DIR" \
	"$IMAGE_REF" "$ID" sh -c 'echo "hello from a Coffer VM: $(uname -r)"' \
	>"$SCRATCH/run.out" 2>"$SCRATCH/run.err" </dev/null &
run_pid=$!

# Report the shim's milestones while ctr runs (ctr itself is bounded by
# RUN_TIMEOUT through timeout(1)), and once more after it returned.
booted="" pulled=""
report_milestones() {
	local line
	if [[ -z $booted ]]; then
		line=$(log_line "$offset" "VM booted and cc-agent answered")
		[[ -n $line ]] || return 0
		booted=1
		log_step "VM booted: QEMU up in $(fmt_dur "$(field "$line" vm_start)"), cc-agent (PID 1 in the guest) answered $(fmt_dur "$(field "$line" agent_ready)") after QEMU started ($(field "$line" transport))"
	fi
	if [[ -z $pulled ]]; then
		line=$(log_line "$offset" "image pulled in the guest")
		[[ -n $line ]] || return 0
		pulled=1
		log_step "image pulled inside the guest in $(fmt_dur "$(field "$line" duration)") ($(field "$line" bytes) bytes, manifest $(field "$line" manifest | cut -c1-19)...): the guest fetched, verified and unpacked its own copy"
	fi
}
while kill -0 "$run_pid" 2>/dev/null; do
	report_milestones
	sleep 0.2
done
report_milestones
run_rc=0
wait "$run_pid" || run_rc=$?
if ((run_rc != 0)); then
	((run_rc == 124 || run_rc == 137)) && die "ctr run did not finish within ${RUN_TIMEOUT}s; its stderr: $(cat "$SCRATCH/run.err")"
	die "ctr run exited with status $run_rc; its stderr: $(cat "$SCRATCH/run.err")"
fi
log_step "runc started the container in the guest; its output, streamed back through containerd:"
sed 's/^/    | /' "$SCRATCH/run.out"
grep -q "hello from a Coffer VM" "$SCRATCH/run.out" ||
	die "the container's output lacks \"hello from a Coffer VM\"; stderr: $(cat "$SCRATCH/run.err")"
guest_kernel=$(sed -n 's/^hello from a Coffer VM: //p' "$SCRATCH/run.out" | head -n1)
log_step "the container saw kernel $guest_kernel (the guest's); the host runs $(uname -r)"
line=$(log_line "$offset" "stopping the VM")
peak=$(field "$line" agent_peak_rss_bytes)
if [[ $peak =~ ^[0-9]+$ ]]; then
	log_step "container exited; the shim stopped the VM (cc-agent peak RSS $(awk -v b="$peak" 'BEGIN { printf "%.1f", b / 1048576 }') MiB)"
else
	log_step "container exited; the shim stopped the VM"
fi
exit 0
