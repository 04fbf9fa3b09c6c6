# Coffer agent policy: the built-in default.
#
# cc-agent (inside the confidential VM) evaluates this policy for every
# request the untrusted host sends it. Each request is decided by the rule
# named after its request message in api/agent/v1/agent.proto (Kata
# Containers' agent-policy naming): ExecProcess is decided by
# ExecProcessRequest, and so on. A rule that is false or undefined denies
# the request with gRPC PermissionDenied, "<Rule> is blocked by agent
# policy". Stdio streams, which are not RPCs, are decided by the
# pseudo-requests ReadStreamRequest (stdout, stderr) and WriteStreamRequest
# (stdin).
#
# Input document (see guest/policy and docs/policy.md):
#
#   input.request_type   the rule being evaluated, e.g. "CreateContainerRequest"
#   input.request        the request as protojson with proto field names and
#                        every field present; CreateContainerRequest.oci_spec
#                        and ExecProcessRequest.process are decoded JSON
#                        objects, canonicalised through the OCI runtime-spec Go
#                        types exactly as the agent reads them.
#                        PullImageRequest also gets request.image = {name,
#                        digest}: the normalised repository and the digest the
#                        guest will pull by ("" when pulling by tag).
#   input.state.containers[<container_id>]
#                        what the agent saw succeed earlier for that container:
#                        image {name, reference, digest, manifest_digest,
#                        config {env, entrypoint, cmd, working_dir, user}}
#                        from PullImage (the guest verified it), and
#                        created, oci_spec from CreateContainer.
#
# This file is also the template of `ccctl policy generate`, which replaces
# the policy_data line at the end with the containers it pins. With the
# empty policy_data below nothing is pinned: any image may be pulled and any
# spec created; exec, stdin, file copies and policy replacement stay denied.
package agent_policy

# ---------------------------------------------------------------------------
# Lifecycle the pod needs: allowed.

# HealthRequest: liveness probe; reveals only the agent version, API version
# and start time.
default HealthRequest := true

# InitSandboxRequest: hands the agent the pod's init-data, once, before any
# container. The agent itself refuses init-data whose digest differs from
# the one the TEE bound at launch, and a second call; its policy.rego then
# replaces this policy. Denying it would leave the pod on this policy and
# unable to attest.
default InitSandboxRequest := true

# GetAttestationEventRequest: the guest's attestation progress (phase, TEE,
# measurement, KBS URL, reason), which exists to be shown to the host.
default GetAttestationEventRequest := true

# DiagnosticsRequest: memory, mounts, container states and the agent's log
# tail for debugging failed pods. The agent never logs secrets; deny it in a
# pinned policy if even mount layout and log lines must stay private.
default DiagnosticsRequest := true

# StartContainerRequest: starts a container that CreateContainerRequest
# already admitted; what runs was decided at create.
default StartContainerRequest := true

# SignalProcessRequest: the host can always stop the pod (it can also just
# kill the VM), so signals reveal nothing.
default SignalProcessRequest := true

# WaitProcessRequest: exit status and time of a process.
default WaitProcessRequest := true

# CloseStdinRequest: only ever takes input away from a process.
default CloseStdinRequest := true

# ResizeTTYRequest: window size of a terminal; carries no data.
default ResizeTTYRequest := true

# StatsRequest: cgroup metrics (CPU, memory, I/O counters).
default StatsRequest := true

# ListPidsRequest: guest PIDs of a container's processes (ctr task ps).
default ListPidsRequest := true

# RemoveContainerRequest: deletes a stopped container or exec and its rootfs.
default RemoveContainerRequest := true

# GetOOMEventRequest: which container hit its memory limit.
default GetOOMEventRequest := true

# ShutdownRequest: powers the guest off; the host controls the VM anyway.
default ShutdownRequest := true

# ReadStreamRequest: the host may read a process's stdout and stderr (logs).
# When a policy denies it the agent drains and discards the output, so the
# workload never blocks on a full pipe.
default ReadStreamRequest := true

# ---------------------------------------------------------------------------
# What the host must not do: denied.

# ExecProcessRequest: an exec'd process (ctr task exec, kubectl exec) runs
# whatever the host chooses inside the workload's memory, e.g. a shell that
# prints its secrets. Denied.
default ExecProcessRequest := false

# WriteStreamRequest: stdin is input the host chooses; to an interactive
# workload it is as good as exec. Denied: the process reads EOF at once.
default WriteStreamRequest := false

# CopyFileRequest: the Coffer agent API has no file-copy request (Kata's
# CopyFile has no counterpart); the rule is reserved so that a future one is
# denied by this policy.
default CopyFileRequest := false

# SetPolicyRequest: replacing the policy at run time. Denied. (Whatever a
# policy says, the agent also refuses a new policy whose digest differs
# from the policy in the measured init-data.)
default SetPolicyRequest := false

# ---------------------------------------------------------------------------
# Pinned: images and container specs. policy_data.containers lists the
# containers the pod owner allows; each entry may pin (a key that is absent
# or null pins nothing):
#
#   image       {name, digest}: repository ("docker.io/library/busybox") and
#               digest of the index or manifest the guest must pull.
#   command     process args before args; null: the image's Entrypoint.
#   args        process args after command; null: the image's Cmd when
#               command is null too, [] otherwise (Kubernetes' rule).
#   env         "K=V" entries that must all be present; besides these only
#               the image config's env, containerd's default PATH and
#               entries matching one of env_regex are allowed.
#   mounts      the only mounts allowed ({destination, type, source,
#               options}, options compared as sets); fewer are fine.
#   privileges  capabilities (allowed in every capability set),
#               no_new_privileges, user {uid, gid}, namespaces (each must be
#               a new namespace), masked_paths and readonly_paths (each must
#               stay), devices (allowed device node paths) and device_cgroup
#               (allowed "allow: true" device cgroup rules).

# PullImageRequest: any image when nothing is pinned, else only a pinned
# image, by digest.
default PullImageRequest := false

PullImageRequest if count(policy_data.containers) == 0

PullImageRequest if {
	some c in policy_data.containers
	pull_matches(object.get(c, "image", null))
}

pull_matches(pin) if pin == null

pull_matches(pin) if {
	pin.name == input.request.image.name
	digest_matches(pin.digest, {input.request.image.digest})
}

digest_matches(want, _) if want == ""

digest_matches(want, have) if {
	want != ""
	want in have
}

# CreateContainerRequest: any spec when nothing is pinned, else a spec that
# matches one policy_data.containers entry in everything it pins.
default CreateContainerRequest := false

CreateContainerRequest if count(policy_data.containers) == 0

CreateContainerRequest if {
	some c in policy_data.containers
	count(create_mismatches(c)) == 0
}

# reasons explains a denial; the agent adds them to the PermissionDenied
# message.
reasons contains msg if {
	input.request_type == "CreateContainerRequest"
	some i, c in policy_data.containers
	some m in create_mismatches(c)
	msg := sprintf("policy_data.containers[%d] %q: %s", [i, object.get(c, "name", ""), m])
}

reasons contains msg if {
	input.request_type == "PullImageRequest"
	count(policy_data.containers) > 0
	msg := sprintf("image %s@%s is not pinned by policy_data.containers", [input.request.image.name, input.request.image.digest])
}

spec := object.get(input.request, "oci_spec", {})

process := object.get(spec, "process", {})

linux := object.get(spec, "linux", {})

container_state := object.get(object.get(input.state, "containers", {}), object.get(input.request, "container_id", ""), {})

pulled_image := object.get(container_state, "image", null)

create_mismatches(c) := ((image_mismatches(c) | args_mismatches(c)) | (env_mismatches(c) | mount_mismatches(c))) | privilege_mismatches(c)

image_mismatches(c) := set() if {
	object.get(c, "image", null) == null
} else := {"no image was pulled in the guest for this container"} if {
	pulled_image == null
} else := {msg} if {
	not image_matches(c.image, pulled_image)
	msg := sprintf("image is %s@%s: the policy pins %s@%s", [pulled_image.name, pulled_image.digest, c.image.name, c.image.digest])
} else := set()

image_matches(pin, img) if {
	pin.name == img.name
	digest_matches(pin.digest, {img.digest, img.manifest_digest})
}

image_list(key) := v if {
	v := pulled_image.config[key]
	is_array(v)
} else := []

entry_command(c) := v if {
	v := c.command
	is_array(v)
} else := image_list("entrypoint")

entry_args(c) := v if {
	v := c.args
	is_array(v)
} else := [] if {
	is_array(object.get(c, "command", null))
} else := image_list("cmd")

args_mismatches(c) := {msg} if {
	want := array.concat(entry_command(c), entry_args(c))
	got := object.get(process, "args", [])
	got != want
	msg := sprintf("process.args is %v: the policy pins %v", [got, want])
} else := set()

# containerd's default PATH (pkg/oci defaultUnixEnv), set when the image
# has no env of its own.
default_path_env := "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The mismatch functions below take set differences (or check a fast path
# first), so a spec that matches costs a few set constructions, and only
# the entries left over are formatted into messages. This keeps a
# CreateContainer decision well under 1 ms (docs/performance.md).

spec_env := as_set(object.get(process, "env", []))

env_mismatches(c) := set() if {
	object.get(c, "env", null) == null
} else := missing | extra if {
	pinned := as_set(c.env)
	missing := {sprintf("env %q pinned by the policy is missing", [e]) | some e in pinned - spec_env}
	plain := (pinned | as_set(image_list("env"))) | {default_path_env}
	extra := {sprintf("env %q is not allowed by the policy", [e]) | some e in spec_env - plain; not env_regex_allowed(c, e)}
}

env_regex_allowed(c, e) if {
	some r in object.get(c, "env_regex", [])
	regex.match(r, e)
}

spec_mounts := object.get(spec, "mounts", [])

# spec_mount_keys are the spec's mounts as mount_key tuples.
spec_mount_keys := {mount_key(m) | some m in spec_mounts}

# spec_mount_set are the spec's mounts, for the fast path: each is exactly
# (same options in the same order) a pinned mount.
spec_mount_set := {m | some m in spec_mounts}

mount_mismatches(c) := set() if {
	object.get(c, "mounts", null) == null
} else := set() if {
	object.subset(c.mounts, spec_mount_set)
} else := {msg |
	bad := spec_mount_keys - {mount_key(p) | some p in c.mounts}
	count(bad) > 0
	some m in spec_mounts
	mount_key(m) in bad
	msg := sprintf("mount %s (%s from %s, options %v) is not allowed by the policy", [
		object.get(m, "destination", ""), object.get(m, "type", ""),
		object.get(m, "source", ""), object.get(m, "options", []),
	])
}

# mount_key identifies a mount by destination, type, source and options
# (as a set): a spec mount is allowed when a pinned mount has its key.
mount_key(m) := [
	object.get(m, "destination", ""), object.get(m, "type", ""),
	object.get(m, "source", ""), as_set(object.get(m, "options", [])),
]

as_set(xs) := {x | some x in xs}

capability_sets := ["bounding", "effective", "permitted", "inheritable", "ambient"]

privilege_mismatches(c) := set() if {
	object.get(c, "privileges", null) == null
} else := ((caps | nnp) | (user | namespaces)) | ((paths | devices) | device_rules) if {
	p := c.privileges
	caps := capability_mismatches(p)
	nnp := no_new_privileges_mismatches(p)
	user := user_mismatches(p)
	namespaces := namespace_mismatches(p)
	paths := path_mismatches(p)
	devices := device_mismatches(p)
	device_rules := device_rule_mismatches(p)
}

spec_capabilities := object.get(process, "capabilities", {})

# spec_capability_names is every capability in any of the spec's sets.
spec_capability_names := {cap | some set_name in capability_sets; some cap in object.get(spec_capabilities, set_name, [])}

# spec_capability_lists are the spec's capability sets, sorted (usually
# one list: bounding, effective and permitted are the same).
spec_capability_lists := {sort(caps) | some caps in spec_capabilities}

# Fast path: every capability set of the spec is empty or holds exactly the
# pinned capabilities (what `ccctl policy generate` pins).
capability_mismatches(p) := set() if {
	count(spec_capability_lists - {[], sort(object.get(p, "capabilities", []))}) == 0
} else := {msg |
	bad := spec_capability_names - as_set(object.get(p, "capabilities", []))
	count(bad) > 0
	some set_name in capability_sets
	some cap in object.get(spec_capabilities, set_name, [])
	cap in bad
	msg := sprintf("capability %s (%s set) is not allowed by the policy", [cap, set_name])
}

no_new_privileges_mismatches(p) := {"process.noNewPrivileges is false: the policy requires true"} if {
	object.get(p, "no_new_privileges", false) == true
	object.get(process, "noNewPrivileges", false) != true
} else := set()

user_mismatches(p) := {msg} if {
	want := object.get(p, "user", null)
	want != null
	got := object.get(process, "user", {})
	[object.get(got, "uid", 0), object.get(got, "gid", 0)] != [want.uid, want.gid]
	msg := sprintf("process.user is %d:%d: the policy pins %d:%d", [object.get(got, "uid", 0), object.get(got, "gid", 0), want.uid, want.gid])
} else := set()

spec_namespaces := object.get(linux, "namespaces", [])

# spec_new_namespaces are the types of the spec's namespaces that are new
# (join no path).
spec_new_namespaces := {ns.type | some ns in spec_namespaces; object.get(ns, "path", "") == ""}

spec_joined_namespaces := {sprintf("namespace %s joins %s: the policy allows no namespace paths", [object.get(ns, "type", ""), ns.path]) |
	some ns in spec_namespaces
	object.get(ns, "path", "") != ""
}

namespace_mismatches(p) := missing | spec_joined_namespaces if {
	missing := {sprintf("namespace %s is not a new namespace: the policy requires one", [t]) |
		some t in as_set(object.get(p, "namespaces", [])) - spec_new_namespaces
	}
}

# Fast path: the spec keeps every pinned path.
path_mismatches(p) := set() if {
	object.subset(object.get(linux, "maskedPaths", []), as_set(object.get(p, "masked_paths", [])))
	object.subset(object.get(linux, "readonlyPaths", []), as_set(object.get(p, "readonly_paths", [])))
} else := masked | readonly if {
	masked := {sprintf("masked path %s was removed: the policy requires it", [x]) |
		some x in object.get(p, "masked_paths", [])
		not x in object.get(linux, "maskedPaths", [])
	}
	readonly := {sprintf("read-only path %s was removed: the policy requires it", [x]) |
		some x in object.get(p, "readonly_paths", [])
		not x in object.get(linux, "readonlyPaths", [])
	}
}

device_mismatches(p) := {msg |
	some d in object.get(linux, "devices", [])
	not object.get(d, "path", "") in object.get(p, "devices", [])
	msg := sprintf("device %s is not allowed by the policy", [object.get(d, "path", "")])
}

device_rule_mismatches(p) := {msg |
	some r in object.get(object.get(linux, "resources", {}), "devices", [])
	object.get(r, "allow", false) == true
	not device_rule_allowed(p, r)
	msg := sprintf("device cgroup rule %v is not allowed by the policy", [r])
}

device_rule_allowed(p, r) if {
	some a in object.get(p, "device_cgroup", [])
	device_rule_key(a) == device_rule_key(r)
}

device_rule_key(r) := [object.get(r, "type", "a"), object.get(r, "major", -1), object.get(r, "minor", -1), object.get(r, "access", "")]

# ---------------------------------------------------------------------------
# policy_data: what this policy pins. `ccctl policy generate` replaces the
# next line.
policy_data := {"containers": []}
