# shellcheck shell=bash
# The attested path for `make demo` and `make bench`: a cc-kbs on
# 127.0.0.1 trusting a freshly generated sim TEE chain, the shim config
# that boots sim-TEE guests attesting to it, the guest's sim measurement as
# a KBS reference value, an encrypted and signed image, and init-data
# pointing the guest at the KBS (pinned certificate).
#
# Source scripts/lib/env.sh first, call env_init, then kbs_start (before
# env_start: the shim config forwards the KBS into the guest), env_start,
# then kbs_trust_guest, attested_image and write_init_data.
# kbs_teardown runs from the EXIT trap (after env_teardown).
#
# Variables set for the caller:
#   KBS_DIR KBS_ADDR KBS_URL KBS_CERT KBS_ADMIN_KEY SIM_DIR KBS_LOG
#   MEASUREMENT (kbs_trust_guest) ENC_REF SIGN_KEY (attested_image)
#   INIT_DATA_FILE INIT_DATA_ANNOTATION (write_init_data)
# Functions: kbs_start, kbs_trust_guest, ccctl_kbs ARGS..., attested_image
#   SRC DST KEY_ID POLICY_NAME, write_init_data [POLICY_URI],
#   kbs_teardown.

KBS_START_TIMEOUT=20
# The shim's attestation.deadline: how long the guest retries an
# unreachable KBS.
ATTEST_DEADLINE=30s

_kbs_pid=""

# ccctl runs build/bin/ccctl, bounded by CTR_TIMEOUT.
ccctl() {
	timeout --kill-after=5 "$CTR_TIMEOUT" "$BIN/ccctl" "$@"
}

# ccctl_kbs runs `ccctl kbs` against this KBS with the admin key,
# trusting its generated certificate.
ccctl_kbs() {
	ccctl kbs --url "$KBS_URL" --cacert "$KBS_CERT" --admin-key "$KBS_ADMIN_KEY" --subject "coffer-${NS:-scripts}" "$@"
}

# kbs_start generates a sim TEE chain (`ccctl attest sim-chain`), an admin
# key pair (`ccctl kbs keygen-admin`) and a cc-kbs config in
# $SCRATCH/kbs, starts cc-kbs on a free 127.0.0.1 port and waits until it
# accepts connections and has written its TLS certificate. It sets the
# shim config extras (tee = "sim", [attestation], the KBS forward) for
# env_start.
kbs_start() {
	KBS_DIR="$SCRATCH/kbs"
	SIM_DIR="$KBS_DIR/sim"
	KBS_LOG="$KBS_DIR/cc-kbs.log"
	KBS_ADMIN_KEY="$KBS_DIR/admin.key"
	KBS_CERT="$KBS_DIR/data/tls.crt"
	mkdir -p "$KBS_DIR"
	ccctl attest sim-chain "$SIM_DIR" >"$KBS_DIR/sim-chain.log" 2>&1 ||
		die "ccctl attest sim-chain $SIM_DIR failed: $(tail -n 5 "$KBS_DIR/sim-chain.log")"
	ccctl kbs keygen-admin --private "$KBS_ADMIN_KEY" --public "$KBS_DIR/admin.pub" >"$KBS_DIR/keygen.log" 2>&1 ||
		die "ccctl kbs keygen-admin failed: $(tail -n 5 "$KBS_DIR/keygen.log")"
	local port
	port=$(free_port) || die "find a free TCP port on 127.0.0.1 for cc-kbs"
	KBS_ADDR="127.0.0.1:$port"
	KBS_URL="https://$KBS_ADDR"
	cat >"$KBS_DIR/cc-kbs.toml" <<-EOF
		listen = "$KBS_ADDR"
		data_dir = "$KBS_DIR/data"

		[admin]
		public_key = "$KBS_DIR/admin.pub"

		[tee.sim]
		root_pem = "$SIM_DIR/root.pem"
	EOF
	setsid "$BIN/cc-kbs" --config "$KBS_DIR/cc-kbs.toml" >"$KBS_LOG" 2>&1 &
	_kbs_pid=$!
	local deadline=$((SECONDS + KBS_START_TIMEOUT))
	while ((SECONDS < deadline)); do
		kill -0 "$_kbs_pid" 2>/dev/null || die "cc-kbs exited during startup: $(tail -n 10 "$KBS_LOG")"
		if [[ -s $KBS_CERT ]] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			break
		fi
		sleep 0.1
	done
	((SECONDS < deadline)) || die "cc-kbs did not listen on $KBS_ADDR within ${KBS_START_TIMEOUT}s: $(tail -n 10 "$KBS_LOG")"
	SHIM_HYPERVISOR_EXTRA='tee = "sim"'
	SHIM_FORWARDS_EXTRA="$KBS_ADDR"
	SHIM_CONFIG_EXTRA=$(printf '[attestation]\nsim_chain_dir = "%s"\ndeadline = "%s"' "$SIM_DIR" "$ATTEST_DEADLINE")
}

# kbs_trust_guest computes the sim launch measurement of build/guest
# (kernel, initrd, command line from its manifest) and adds it to the
# KBS's reference values. Sets MEASUREMENT (hex).
kbs_trust_guest() {
	local json
	json=$(ccctl measure --tee sim --guest "$GUEST" --json) ||
		die "ccctl measure --tee sim --guest $GUEST failed"
	MEASUREMENT=$(sed -n 's/.*"measurement": *"\([0-9a-f]*\)".*/\1/p' <<<"$json")
	[[ -n $MEASUREMENT ]] || die "ccctl measure --json printed $json: want {\"tee\", \"measurement\"}"
	ccctl_kbs reference-values add --from-json - <<<"$json" >"$KBS_DIR/refvalues.log" 2>&1 ||
		die "ccctl kbs reference-values add failed: $(tail -n 5 "$KBS_DIR/refvalues.log")"
}

# attested_image SRC DST KEY_ID POLICY_NAME encrypts SRC into DST with a
# fresh key registered in the KBS as KEY_ID (`ccctl image encrypt`), signs
# DST with a fresh cosign key (`ccctl image sign`), and stores the
# signature policy (only DST's repository, only signed by that key) in
# the KBS at default/security-policy/POLICY_NAME. Sets ENC_REF (DST) and
# SIGN_KEY.
attested_image() {
	local src=$1 dst=$2 kid=$3 pname=$4
	SIGN_KEY="$KBS_DIR/cosign-$pname.key"
	ccctl image encrypt --kbs "$KBS_URL" --kbs-cert "$KBS_CERT" --admin-key "$KBS_ADMIN_KEY" \
		--key-id "$kid" --insecure-registry "$src" "$dst" >"$KBS_DIR/encrypt-$pname.log" 2>&1 ||
		die "ccctl image encrypt $src $dst failed: $(tail -n 5 "$KBS_DIR/encrypt-$pname.log")"
	ccctl image sign --generate-key "$SIGN_KEY" >/dev/null 2>"$KBS_DIR/sign-$pname.log" ||
		die "ccctl image sign --generate-key failed: $(tail -n 5 "$KBS_DIR/sign-$pname.log")"
	ccctl image sign --key "$SIGN_KEY" --insecure-registry "$dst" >"$KBS_DIR/sign-$pname.out" 2>"$KBS_DIR/sign-$pname.log" ||
		die "ccctl image sign $dst failed: $(tail -n 5 "$KBS_DIR/sign-$pname.log")"
	# It prints what it signed, then the policy JSON from a line "{" on.
	sed -n '/^{/,$p' "$KBS_DIR/sign-$pname.out" >"$KBS_DIR/policy-$pname.json"
	[[ -s $KBS_DIR/policy-$pname.json ]] ||
		die "ccctl image sign $dst printed no containers-policy.json: $(cat "$KBS_DIR/sign-$pname.out")"
	ccctl_kbs resource set --file "$KBS_DIR/policy-$pname.json" "default/security-policy/$pname" >"$KBS_DIR/resource.log" 2>&1 ||
		die "store the signature policy in the KBS failed: $(tail -n 5 "$KBS_DIR/resource.log")"
	ENC_REF=$dst
}

# write_init_data [POLICY_URI] writes a CoCo init-data document (version
# 0.1.0, sha384) pointing the guest's attestation agent and CDH at this KBS
# with its certificate pinned, and naming the image security policy
# POLICY_URI (kbs:///...). It carries no agent policy, so the guest
# enforces its built-in default one. Sets INIT_DATA_FILE and
# INIT_DATA_ANNOTATION (the io.coffer.cc.init-data value, base64).
write_init_data() {
	local uri=${1:-} cert image=""
	cert=$(<"$KBS_CERT")
	[[ -n $uri ]] && image=$(printf '\n[image]\nimage_security_policy_uri = "%s"' "$uri")
	INIT_DATA_FILE="$KBS_DIR/initdata.toml"
	cat >"$INIT_DATA_FILE" <<-EOF
		version = "0.1.0"
		algorithm = "sha384"

		[data]
		"aa.toml" = '''
		[token_configs.kbs]
		url = "$KBS_URL"
		cert = """
		$cert
		"""
		'''
		"cdh.toml" = '''
		[kbc]
		name = "cc_kbc"
		url = "$KBS_URL"
		kbs_cert = """
		$cert
		"""
		$image
		'''
	EOF
	INIT_DATA_ANNOTATION=$(base64 -w0 "$INIT_DATA_FILE")
}

# kbs_teardown stops cc-kbs (its files go with the scratch dir).
kbs_teardown() {
	[[ -n $_kbs_pid ]] && stop_pid "$_kbs_pid" cc-kbs 5
	_kbs_pid=""
}
