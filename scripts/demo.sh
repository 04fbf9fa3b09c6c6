#!/usr/bin/env bash
# `make demo`: run an encrypted, signed image in a Coffer VM through the
# attested path (sim TEE), end to end, in a scratch environment, then tear
# everything down and check nothing is left.
#
# Steps (scratch dir under /tmp):
#  1. cc-kbs on 127.0.0.1 with a fresh sim TEE chain (`ccctl attest
#     sim-chain`) and admin key (`ccctl kbs keygen-admin`); the guest's sim
#     launch measurement (`ccctl measure --tee sim --guest build/guest`)
#     becomes its reference value.
#  2. A distribution registry and a private containerd whose shim config
#     says tee = "sim"; the busybox test image is pushed, then
#     `ccctl image encrypt` (layer key registered in the KBS) and
#     `ccctl image sign` (the signature policy stored in the KBS).
#  3. `ctr run` with init-data (annotation io.coffer.cc.init-data) naming
#     the KBS, its pinned certificate and the image security policy. The
#     guest attests, gets the policy and the layer key, verifies the
#     signature, decrypts and unpacks the layers, and runs the container,
#     which reads a secret from the KBS through the in-guest CDH endpoint.
#     `ccctl events --cc` prints the /cc/attestation events meanwhile.
# Sim evidence proves nothing against a malicious host: it exists so the
# attested flow runs without SEV-SNP or TDX hardware. Needs root and
# `make deps tools build guest` (the Makefile runs those first).
set -euo pipefail

# shellcheck source=scripts/lib/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/env.sh"
# shellcheck source=scripts/lib/attest.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/attest.sh"

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

# json_field LINE KEY prints the value of "KEY": in a one-line JSON
# payload (strings unquoted; numbers as they are).
json_field() {
	grep -o "\"$2\":\(\"[^\"]*\"\|[0-9-]*\)" <<<"$1" | head -n1 | cut -d: -f2- | tr -d '"'
}

# fmt_ns turns nanoseconds into seconds with two decimals ("" stays "").
fmt_ns() { [[ -n $1 ]] && awk -v n="$1" 'BEGIN { printf "%.2fs", n / 1e9 }'; }

# log_line OFFSET MSG prints the first containerd log line after byte
# OFFSET whose msg is MSG.
log_line() { tail -c "+$(($1 + 1))" "$CTD_LOG" | grep -m1 -F "msg=\"$2\"" || true; }

on_exit() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if [[ -n ${SCRATCH:-} ]]; then
		[[ -n ${events_pid:-} ]] && stop_pid "$events_pid" "ccctl events" 5
		kbs_teardown
		env_teardown
		if env_leftovers "$ID"; then
			((rc == 0)) && log_step "torn down: containerd, cc-kbs and the registry stopped, scratch dir removed; no QEMU process and no $(vm_state_dir "$ID") left"
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
for f in ccctl cc-kbs; do
	[[ -x $BIN/$f ]] || die "missing $BIN/$f: run \`make build\`"
done
kbs_start
log_step "cc-kbs serving $KBS_URL, trusting a fresh test-only sim TEE chain ($SIM_DIR)"
env_start
kbs_trust_guest
log_step "KBS reference value: sim launch measurement of build/guest (kernel, initrd, cmdline) = ${MEASUREMENT:0:24}..."
ENC="$REG_ADDR/secure/busybox:enc"
attested_image "$IMAGE_REF" "$ENC" kbs:///default/key/busybox demo
log_step "encrypted $IMAGE_REF as $ENC (layer key kbs:///default/key/busybox, held only by the KBS), signed it (cosign key), and stored the signature policy in the KBS as kbs:///default/security-policy/demo"
ccctl_kbs resource set --value "a secret released only to an attested guest" default/demo/greeting >/dev/null 2>"$KBS_DIR/resource.log" ||
	die "store default/demo/greeting in the KBS failed: $(cat "$KBS_DIR/resource.log")"
write_init_data kbs:///default/security-policy/demo
log_step "init-data: KBS $KBS_URL (certificate pinned), image policy kbs:///default/security-policy/demo, default agent policy; its SHA-384 is bound into the sim launch evidence"
ctr image pull --plain-http --snapshotter cc "$ENC" >"$SCRATCH/pull-enc.log" 2>&1 ||
	die "ctr image pull --snapshotter cc $ENC failed: $(tail -n 5 "$SCRATCH/pull-enc.log")"
log_step "ctr image pull --snapshotter cc $ENC: manifest and config only, no (encrypted) layer on the host"

"$BIN/ccctl" events --cc --address "$ADDRESS" >"$SCRATCH/events.log" 2>&1 &
events_pid=$!

CMD='echo "hello from a Coffer VM: $(uname -r)"; echo "secret from the KBS: $(wget -qO- http://127.0.0.1:8006/cdh/resource/default/demo/greeting)"'
log_step "running the encrypted, signed image in a sim-TEE VM:"
echo "    ctr run --rm --snapshotter cc --runtime io.containerd.cc.v2 --runtime-config-path $SHIM_CONFIG \\"
echo "        --annotation io.coffer.cc.init-data=<base64 of $INIT_DATA_FILE> \\"
echo "        $ENC $ID sh -c '$CMD'"
offset=$(stat -c %s "$CTD_LOG")
CTR_TIMEOUT=$RUN_TIMEOUT ctr run --rm --snapshotter cc --runtime io.containerd.cc.v2 \
	--runtime-config-path "$SHIM_CONFIG" --fifo-dir "$FIFO_DIR" \
	--annotation "io.coffer.cc.init-data=$INIT_DATA_ANNOTATION" \
	"$ENC" "$ID" sh -c "$CMD" \
	>"$SCRATCH/run.out" 2>"$SCRATCH/run.err" </dev/null &
run_pid=$!

# Report the shim's milestones and the attestation events while ctr runs
# (ctr itself is bounded by RUN_TIMEOUT through timeout(1)), and once more
# after it returned.
booted="" pulled="" events_shown=0
# show_events prints the /cc/attestation events not printed yet.
show_events() {
	local lines n line phase extra
	mapfile -t lines < <(grep ' /cc/attestation ' "$SCRATCH/events.log" 2>/dev/null)
	n=${#lines[@]}
	while ((events_shown < n)); do
		line=${lines[events_shown]}
		events_shown=$((events_shown + 1))
		phase=$(json_field "$line" phase)
		extra=""
		case $phase in
		allowed) extra="tee $(json_field "$line" tee), measurement $(json_field "$line" measurement | cut -c1-24)..." ;;
		keys-released) extra="$(json_field "$line" resource)" ;;
		denied | failed) extra="$(json_field "$line" reason)" ;;
		esac
		printf '    /cc/attestation  %-14s %7s  %s\n' "$phase" "$(fmt_ns "$(json_field "$line" duration_ns)")" "$extra"
	done
}
report_milestones() {
	local line
	if [[ -z $booted ]]; then
		line=$(log_line "$offset" "VM booted and cc-agent answered")
		[[ -n $line ]] || return 0
		booted=1
		log_step "VM booted: QEMU up in $(fmt_dur "$(field "$line" vm_start)"), cc-agent (PID 1 in the guest) answered $(fmt_dur "$(field "$line" agent_ready)") after QEMU started ($(field "$line" transport)); the guest attests before it may pull:"
		printf '    %-16s %-14s %7s  %s\n' "event (ccctl events)" phase "elapsed" "(elapsed: guest time since the attestation attempt or resource request began)"
	fi
	show_events
	if [[ -z $pulled ]]; then
		line=$(log_line "$offset" "image pulled in the guest")
		[[ -n $line ]] || return 0
		pulled=1
		log_step "image pulled inside the guest in $(fmt_dur "$(field "$line" duration)") ($(field "$line" bytes) bytes, manifest $(field "$line" manifest | cut -c1-19)...): signature verified against the KBS's policy, layers decrypted with the released key, diff_ids checked, unpacked"
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
show_events
log_step "runc started the container in the guest; its output, streamed back through containerd:"
sed 's/^/    | /' "$SCRATCH/run.out"
grep -q "hello from a Coffer VM" "$SCRATCH/run.out" ||
	die "the container's output lacks \"hello from a Coffer VM\"; stderr: $(cat "$SCRATCH/run.err")"
grep -q "secret from the KBS: a secret released only" "$SCRATCH/run.out" ||
	die "the container did not read default/demo/greeting through the CDH endpoint; stderr: $(cat "$SCRATCH/run.err")"
guest_kernel=$(sed -n 's/^hello from a Coffer VM: //p' "$SCRATCH/run.out" | head -n1)
log_step "the container saw kernel $guest_kernel (the guest's); the host runs $(uname -r)"
grep -q ' /cc/attestation .*"phase":"allowed"' "$SCRATCH/events.log" ||
	die "ccctl events saw no /cc/attestation allowed event: $(cat "$SCRATCH/events.log")"
line=$(log_line "$offset" "stopping the VM")
peak=$(field "$line" agent_peak_rss_bytes)
if [[ $peak =~ ^[0-9]+$ ]]; then
	log_step "container exited; the shim stopped the VM (cc-agent peak RSS $(awk -v b="$peak" 'BEGIN { printf "%.1f", b / 1048576 }') MiB)"
else
	log_step "container exited; the shim stopped the VM"
fi
exit 0
