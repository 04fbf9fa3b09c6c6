# cc-kbs default attestation policy.
#
# Turns verified evidence claims into an AR4SI trustworthiness vector
# (draft-ietf-rats-ar4si §2.3.4). cc-kbs issues an attestation token only
# when every claim is in the affirming tier (2..31); any warning (32..95) or
# contraindicated (96..127) value refuses the attestation with a
# policy-denied problem listing the non-affirming claims and "reasons".
#
# Input (see docs/kbs.md "Attestation policy"):
#   input.tee               "snp" | "tdx" | "sim"
#   input.claims            verified claims: measurement, debug, host_data, ...
#   input.tcb               snp/sim: {reported, committed, launch} each
#                           {bootloader, tee, snp, microcode}; tdx: {tee_tcb_svn: [16 ints]}
#   input.tcb_floor         snp/sim: {bootloader, tee, snp, microcode}; tdx: {tee_tcb_svn}
#   input.reference_values  {measurements: [hex], init_data: [hex], min_tcb, min_tee_tcb_svn}
#   input.init_data         null, or {algorithm, digest, data} when init-data matched
#   input.init_data_digest  hex digest of the init-data the evidence binds, or ""
#                           when the guest sent none
#
# Defaults: deny unless the measurement is a reference value, debug is off,
# every TCB is at or above the floor and, when the reference values list
# init-data digests for the TEE, the guest's init-data is one of them.
package policy

import rego.v1

# executables 33: "Runtime memory includes executables, scripts, files,
# and/or objects which are not recognized." (warning)
default executables := 33

# hardware 97: "A Verifier does not recognize an Attester's hardware or
# firmware, but it should be recognized." (contraindicated)
default hardware := 97

# configuration 96: "The configuration is unsupportable as it exposes
# unacceptable security vulnerabilities." (contraindicated)
default configuration := 96

trust_claims := {
	"executables": executables,
	"hardware": hardware,
	"configuration": configuration,
}

measurement := object.get(input.claims, "measurement", "")

trusted := m if {
	m := input.reference_values.measurements
	is_array(m)
} else := []

measurement_ok if measurement in trusted

# executables 3: "Only a recognized genuine set of approved executables
# have been loaded during the boot process."
executables := 3 if measurement_ok

# hardware 2: "An Attester has passed its hardware and/or firmware
# verifications needed to demonstrate that these are genuine/supported."
# The verifier already checked the signature chain to the configured roots;
# here the TCB must reach the floor.
# hardware 32: "...genuine/supported hardware and/or firmware, but there
# are known security vulnerabilities." (warning)
hardware := 2 if tcb_ok
else := 32

# configuration 2: "The configuration is a known and approved config."
# The init-data (agent policy, KBS and image settings the guest was
# launched with) is configuration: a host launching the guest with
# init-data of its own choosing leaves configuration at 96.
configuration := 2 if {
	input.claims.debug == false
	init_data_ok
}

trusted_init_data := d if {
	d := input.reference_values.init_data
	is_array(d)
} else := []

init_data_digest := object.get(input, "init_data_digest", "")

# Pinned only when configured: with no init-data reference values for the
# TEE, any init-data (or none) is accepted, as before. Add the digests of
# the documents you launch guests with (`ccctl kbs reference-values add
# --tee T --init-data initdata.toml`) for the KBS to enforce them.
init_data_ok if count(trusted_init_data) == 0

init_data_ok if {
	init_data_digest != ""
	init_data_digest in trusted_init_data
}

tcb_kinds := ["reported", "committed", "launch"]

at_least(t, f) if {
	t.bootloader >= f.bootloader
	t.tee >= f.tee
	t.snp >= f.snp
	t.microcode >= f.microcode
}

tcb_ok if {
	input.tee != "tdx"
	every kind in tcb_kinds {
		at_least(input.tcb[kind], input.tcb_floor)
	}
}

tcb_ok if {
	input.tee == "tdx"
	svn := input.tcb.tee_tcb_svn
	floor := input.tcb_floor.tee_tcb_svn
	count(svn) == count(floor)
	every i, x in floor {
		svn[i] >= x
	}
}

reasons contains msg if {
	not measurement_ok
	msg := sprintf("measurement %q is not in the %s reference values (%d trusted)", [measurement, input.tee, count(trusted)])
}

reasons contains "debug is enabled (guest policy DEBUG / TD ATTRIBUTES.DEBUG)" if input.claims.debug == true

reasons contains msg if {
	input.tee != "tdx"
	some kind in tcb_kinds
	not at_least(input.tcb[kind], input.tcb_floor)
	msg := sprintf("%s TCB %v is below the floor %v", [kind, input.tcb[kind], object.remove(input.tcb_floor, ["tee_tcb_svn"])])
}

reasons contains msg if {
	input.tee == "tdx"
	not tcb_ok
	msg := sprintf("TEE_TCB_SVN %v is below the floor %v", [object.get(input.tcb, "tee_tcb_svn", []), input.tcb_floor.tee_tcb_svn])
}

reasons contains msg if {
	not init_data_ok
	init_data_digest != ""
	msg := sprintf("init-data digest %s is not in the %s reference values (%d trusted)", [init_data_digest, input.tee, count(trusted_init_data)])
}

reasons contains msg if {
	not init_data_ok
	init_data_digest == ""
	msg := sprintf("no init-data was sent, but the %s reference values pin init-data (%d trusted): the guest must send the init-data it was launched with", [input.tee, count(trusted_init_data)])
}
