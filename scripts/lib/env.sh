# shellcheck shell=bash
# Coffer scratch environment for `make demo` and `make bench`: a private
# distribution registry and containerd in a scratch directory, a shim
# config, and the busybox test image pushed and pulled. Source this file,
# then call env_init, env_start; env_teardown runs from the EXIT trap.
#
# Nothing here touches the host's own containerd: containerd gets its own
# root, state and sockets under the scratch dir (as integration/harness
# does). containerd itself still puts shim sockets in /run/containerd/s.
#
# Variables set for the caller:
#   REPO BIN GUEST SCRATCH NS ADDRESS SN_ADDRESS CTD_LOG SHIM_CONFIG FIFO_DIR
#   REG_ADDR IMAGE_REF
# Functions: env_init LABEL, env_start, ctr ARGS..., die MSG,
#   log_step MSG, vm_state_dir ID, env_teardown, env_leftovers IDS...

# Bounds on every wait, in seconds.
REGISTRY_START_TIMEOUT=20
CONTAINERD_START_TIMEOUT=30
CONTAINERD_STOP_TIMEOUT=10
CTR_TIMEOUT=60

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="$REPO/build/bin"
GUEST="$REPO/build/guest"

_registry_pid=""
_containerd_pid=""
_snapshotter_pid=""
SNAPSHOTTER_START_TIMEOUT=15

# log_step prints a progress line.
log_step() { printf '==> %s\n' "$*"; }

# die prints an error and the tail of containerd's log (its own and the
# shims' lines, debug lines left out), keeps the whole log next to the
# scratch dir (which the EXIT trap removes), and exits 1.
die() {
	printf '\nERROR: %s\n' "$*" >&2
	if [[ -n "${CTD_LOG:-}" && -s "$CTD_LOG" ]]; then
		printf '\n--- containerd log tail, without debug lines (%s) ---\n' "$CTD_LOG" >&2
		grep -v 'level=debug' "$CTD_LOG" | tail -n 40 >&2
		printf -- '--- end of containerd log ---\n' >&2
		if cp "$CTD_LOG" "$SCRATCH.containerd.log" 2>/dev/null; then
			printf 'full containerd log (debug level) kept in %s\n' "$SCRATCH.containerd.log" >&2
		fi
	fi
	exit 1
}

# ctr runs build/bin/ctr against the scratch containerd and namespace,
# bounded by CTR_TIMEOUT.
ctr() {
	timeout --kill-after=5 "$CTR_TIMEOUT" "$BIN/ctr" --address "$ADDRESS" --namespace "$NS" "$@"
}

# env_init LABEL checks the prerequisites and creates the scratch dir
# (/tmp/coffer-LABEL.XXXXXX: short, because unix socket paths are limited to
# 108 bytes) and a namespace unique to this run.
env_init() {
	local label=$1
	[[ $EUID -eq 0 ]] || die "run as root: containerd, its mounts and QEMU need root"
	local f missing=()
	for f in containerd ctr registry containerd-shim-cc-v2 coffer-testimage; do
		[[ -x "$BIN/$f" ]] || missing+=("$BIN/$f")
	done
	for f in vmlinuz initrd.img manifest.json; do
		[[ -f "$GUEST/$f" ]] || missing+=("$GUEST/$f")
	done
	((${#missing[@]} == 0)) || die "missing ${missing[*]}: run \`make tools build guest\`"
	command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is not on PATH: install Debian's qemu-system-x86 (\`make deps\`)"
	command -v runc >/dev/null || die "runc is not on PATH: install Debian's runc (\`make deps\`); the guest build copies it"
	SCRATCH="$(mktemp -d "/tmp/coffer-$label.XXXXXX")" || die "create a scratch dir under /tmp"
	NS="coffer-$label-${SCRATCH##*.}"
	NS="${NS,,}"
	ADDRESS="$SCRATCH/containerd.sock"
	CTD_LOG="$SCRATCH/containerd.log"
	SHIM_CONFIG="$SCRATCH/cc.toml"
	FIFO_DIR="$SCRATCH/fifo"
	mkdir -p "$FIFO_DIR"
}

# free_port prints a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
	local port attempt
	for attempt in $(seq 1 50); do
		port=$((20000 + RANDOM % 40000))
		# A refused connection means the port is free.
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return 0
		fi
	done
	return 1
}

# start_registry starts a distribution registry on a free 127.0.0.1 port
# with filesystem storage in the scratch dir, and waits for GET /v2/.
start_registry() {
	local attempt port
	mkdir -p "$SCRATCH/registry"
	for attempt in 1 2 3; do
		port=$(free_port) || die "find a free TCP port on 127.0.0.1"
		REG_ADDR="127.0.0.1:$port"
		cat >"$SCRATCH/registry/config.yml" <<-EOF
			version: 0.1
			log:
			  level: warn
			  accesslog:
			    disabled: true
			storage:
			  filesystem:
			    rootdirectory: "$SCRATCH/registry/storage"
			http:
			  addr: "$REG_ADDR"
			  secret: "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
		EOF
		# distribution v3 exports OpenTelemetry traces by default and logs
		# every failed export; there is no collector here.
		OTEL_TRACES_EXPORTER=none OTEL_SDK_DISABLED=true \
			setsid "$BIN/registry" serve "$SCRATCH/registry/config.yml" \
			>"$SCRATCH/registry/registry.log" 2>&1 &
		_registry_pid=$!
		if wait_registry; then
			return 0
		fi
		kill -KILL "$_registry_pid" 2>/dev/null
		wait "$_registry_pid" 2>/dev/null
		_registry_pid=""
	done
	die "the registry did not serve http://$REG_ADDR/v2/ within ${REGISTRY_START_TIMEOUT}s (3 attempts); its log: $(tail -n 20 "$SCRATCH/registry/registry.log")"
}

# wait_registry polls GET /v2/ until 200, the registry exits, or the
# timeout.
wait_registry() {
	local deadline=$((SECONDS + REGISTRY_START_TIMEOUT)) status
	while ((SECONDS < deadline)); do
		kill -0 "$_registry_pid" 2>/dev/null || return 1
		status=$(timeout 2 bash -c '
			exec 3<>"/dev/tcp/${1%:*}/${1#*:}" || exit 1
			printf "GET /v2/ HTTP/1.0\r\nHost: %s\r\n\r\n" "$1" >&3
			head -n1 <&3' _ "$REG_ADDR" 2>/dev/null) || status=""
		[[ $status == *" 200 "* ]] && return 0
		sleep 0.1
	done
	return 1
}

# start_snapshotter starts cc-snapshotter (metadata in the scratch dir) and
# waits for its socket.
start_snapshotter() {
	SN_ADDRESS="$SCRATCH/ccsn.sock"
	setsid "$BIN/cc-snapshotter" --root "$SCRATCH/ccsn" --address "$SN_ADDRESS" \
		>"$SCRATCH/cc-snapshotter.log" 2>&1 &
	_snapshotter_pid=$!
	local deadline=$((SECONDS + SNAPSHOTTER_START_TIMEOUT))
	while ((SECONDS < deadline)); do
		kill -0 "$_snapshotter_pid" 2>/dev/null ||
			die "cc-snapshotter exited during startup: $(tail -n 5 "$SCRATCH/cc-snapshotter.log")"
		[[ -S $SN_ADDRESS ]] && return 0
		sleep 0.1
	done
	die "cc-snapshotter did not serve $SN_ADDRESS within ${SNAPSHOTTER_START_TIMEOUT}s"
}

# start_containerd writes a version-4 config (own root, state and sockets;
# CRI runtime "cc" = io.containerd.cc.v2 with the shim config) and starts
# containerd with build/bin first on PATH, so it finds
# containerd-shim-cc-v2 there. It waits until `ctr version` answers.
start_containerd() {
	cat >"$SCRATCH/containerd.toml" <<-EOF
		version = 4
		root = "$SCRATCH/root"
		state = "$SCRATCH/state"

		[debug]
		level = "debug"

		[plugins."io.containerd.server.v1.grpc"]
		address = "$ADDRESS"

		[plugins."io.containerd.server.v1.ttrpc"]
		address = "$ADDRESS.ttrpc"

		[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.cc]
		runtime_type = "io.containerd.cc.v2"
		snapshotter = "cc"
		[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.cc.options]
		ConfigPath = "$SHIM_CONFIG"

		[[plugins."io.containerd.transfer.v1.local".unpack_config]]
		platform = "linux/amd64"
		snapshotter = "overlayfs"
		[[plugins."io.containerd.transfer.v1.local".unpack_config]]
		platform = "linux/amd64"
		snapshotter = "cc"

		[proxy_plugins.cc]
		type = "snapshot"
		address = "$SN_ADDRESS"
		[proxy_plugins.cc.exports]
		enable_remote_snapshot_annotations = "true"
	EOF
	env -u CONTAINERD_ADDRESS -u CONTAINERD_NAMESPACE PATH="$BIN:$PATH" \
		setsid "$BIN/containerd" --config "$SCRATCH/containerd.toml" >"$CTD_LOG" 2>&1 &
	_containerd_pid=$!
	local deadline=$((SECONDS + CONTAINERD_START_TIMEOUT))
	while ((SECONDS < deadline)); do
		kill -0 "$_containerd_pid" 2>/dev/null || die "containerd exited during startup"
		if [[ -S $ADDRESS ]] && CTR_TIMEOUT=5 ctr version >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	die "containerd did not serve $ADDRESS within ${CONTAINERD_START_TIMEOUT}s"
}

# write_shim_config writes the shim config: the guest reaches the registry
# through a QEMU forward and over plain HTTP; the guest build is
# build/guest. Callers may set, before env_start:
#   SHIM_HYPERVISOR_EXTRA  lines added to [hypervisor] (e.g. tee = "sim")
#   SHIM_FORWARDS_EXTRA    more host:port forwards (e.g. cc-kbs's address)
#   SHIM_CONFIG_EXTRA      whole tables appended (e.g. [attestation])
write_shim_config() {
	local fwd="\"$REG_ADDR\"" a
	for a in ${SHIM_FORWARDS_EXTRA:-}; do fwd+=", \"$a\""; done
	cat >"$SHIM_CONFIG" <<-EOF
		[hypervisor]
		guest_dir = "$GUEST"
		${SHIM_HYPERVISOR_EXTRA:-}

		[network]
		forwards = [$fwd]

		[registry]
		insecure = ["$REG_ADDR"]
	EOF
	if [[ -n ${SHIM_CONFIG_EXTRA:-} ]]; then
		printf '\n%s\n' "$SHIM_CONFIG_EXTRA" >>"$SHIM_CONFIG"
	fi
}

# env_start starts the registry and containerd, writes the shim config,
# pushes the busybox test image and pulls it into containerd (the host
# needs the image config to build the OCI spec; the guest pulls the layers
# itself).
env_start() {
	start_registry
	log_step "registry serving http://$REG_ADDR (scratch dir $SCRATCH)"
	write_shim_config
	start_snapshotter
	start_containerd
	log_step "containerd running on $ADDRESS (namespace $NS, runtime io.containerd.cc.v2 -> $BIN/containerd-shim-cc-v2)"
	IMAGE_REF=$(timeout 120 "$BIN/coffer-testimage" --registry "$REG_ADDR" --repo busybox:latest) ||
		die "build and push the busybox test image to $REG_ADDR"
	log_step "pushed the busybox test image (host's /bin/busybox) as $IMAGE_REF"
	ctr image pull --plain-http --snapshotter cc "$IMAGE_REF" >"$SCRATCH/pull.log" 2>&1 ||
		die "ctr image pull --plain-http --snapshotter cc $IMAGE_REF failed: $(tail -n 5 "$SCRATCH/pull.log")"
	log_step "ctr image pull --snapshotter cc done: containerd has the manifest and config; no layer was fetched or unpacked on the host"
}

# vm_state_dir ID prints the shim's VM state dir for container ID in NS:
# /run/cc/<first 8 bytes of sha256("<ns>/<id>") in hex> (shim/sandbox.go).
vm_state_dir() {
	printf '/run/cc/%s\n' "$(printf '%s/%s' "$NS" "$1" | sha256sum | cut -c1-16)"
}

# pids_mentioning STRING prints the pids whose command line contains STRING.
pids_mentioning() {
	local d args
	for d in /proc/[0-9]*; do
		mapfile -d '' args 2>/dev/null <"$d/cmdline" || continue
		[[ "${args[*]}" == *"$1"* ]] && echo "${d#/proc/}"
	done
	return 0
}

# qemu_pids_mentioning STRING prints the qemu-system pids whose command line
# contains STRING.
qemu_pids_mentioning() {
	local pid args exe
	for pid in $(pids_mentioning "$1"); do
		mapfile -d '' args 2>/dev/null <"/proc/$pid/cmdline" || continue
		exe=${args[0]:-}
		[[ ${exe##*/} == qemu-system-* ]] && echo "$pid"
	done
	return 0
}

# children_of PID prints the pids whose parent is PID.
children_of() {
	local d stat ppid
	for d in /proc/[0-9]*; do
		{ stat=$(<"$d/stat"); } 2>/dev/null || continue
		# Field 2 (comm) is parenthesised and may hold spaces: skip past it.
		stat=${stat##*) }
		read -r _ ppid _ <<<"$stat"
		[[ $ppid == "$1" ]] && echo "${d#/proc/}"
	done
	return 0
}

# stop_pid PID NAME TIMEOUT sends SIGTERM, waits up to TIMEOUT seconds,
# then SIGKILLs PID's process group (the daemons run under setsid).
stop_pid() {
	local pid=$1 name=$2 limit=$3
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
	kill -TERM "$pid" 2>/dev/null
	local deadline=$((SECONDS + limit))
	while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "teardown: $name ignored SIGTERM for ${limit}s, sending SIGKILL" >&2
		kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
	return 0
}

# env_teardown removes the namespace's tasks and containers, kills any
# shim still serving this containerd (and its QEMU), stops containerd and
# the registry, unmounts what is left under the scratch dir and removes
# it. Best effort: it reports problems and keeps going.
env_teardown() {
	[[ -n ${SCRATCH:-} && -d $SCRATCH ]] || return 0
	if [[ -n $_containerd_pid ]] && kill -0 "$_containerd_pid" 2>/dev/null; then
		local id
		for id in $(CTR_TIMEOUT=10 ctr task ls -q 2>/dev/null); do
			CTR_TIMEOUT=30 ctr task rm -f "$id" >/dev/null 2>&1 || echo "teardown: ctr task rm -f $id failed" >&2
		done
		for id in $(CTR_TIMEOUT=10 ctr container ls -q 2>/dev/null); do
			CTR_TIMEOUT=30 ctr container rm "$id" >/dev/null 2>&1 || echo "teardown: ctr container rm $id failed" >&2
		done
	fi
	# Shims serving this containerd name its socket on their command line.
	local pid args exe
	for pid in $(pids_mentioning "$ADDRESS"); do
		[[ $pid == "$_containerd_pid" ]] && continue
		mapfile -d '' args 2>/dev/null <"/proc/$pid/cmdline" || continue
		exe=${args[0]:-}
		if [[ ${exe##*/} == containerd-shim-cc-v2 ]]; then
			echo "teardown: killing leftover shim $pid and its VM" >&2
			local child
			for child in $(children_of "$pid"); do
				kill -KILL "$child" 2>/dev/null
			done
			kill -KILL "$pid" 2>/dev/null
		fi
	done
	[[ -n $_containerd_pid ]] && stop_pid "$_containerd_pid" containerd "$CONTAINERD_STOP_TIMEOUT"
	[[ -n $_registry_pid ]] && stop_pid "$_registry_pid" registry 5
	[[ -n $_snapshotter_pid ]] && stop_pid "$_snapshotter_pid" cc-snapshotter 10
	_containerd_pid="" _registry_pid="" _snapshotter_pid=""
	# Unmount deepest first.
	local m
	while read -r m; do
		umount -l "$m" 2>/dev/null || echo "teardown: umount $m failed" >&2
	done < <(awk -v d="$SCRATCH/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r)
	rm -rf "$SCRATCH" || echo "teardown: could not remove $SCRATCH" >&2
}

# env_leftovers ID... prints what the given containers left on the host:
# QEMU processes naming their VM state dir or this run's scratch dir or
# namespace, and their /run/cc dirs. It returns 1 when something is left.
env_leftovers() {
	local id dir pid left=0
	for id in "$@"; do
		dir=$(vm_state_dir "$id")
		if [[ -e $dir ]]; then
			echo "leftover VM state dir $dir (container $id)" >&2
			left=1
		fi
		for pid in $(qemu_pids_mentioning "$dir"); do
			echo "leftover QEMU process $pid for container $id: $(tr '\0' ' ' <"/proc/$pid/cmdline")" >&2
			left=1
		done
	done
	for pid in $(qemu_pids_mentioning "$SCRATCH") $(qemu_pids_mentioning "$NS"); do
		echo "leftover QEMU process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline")" >&2
		left=1
	done
	return "$left"
}
