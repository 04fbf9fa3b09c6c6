# cc-kbs default resource policy.
#
# Decides, per resource request, from the attestation token's claims.
#
# Input (see docs/kbs.md "Resource policy"):
#   input.claims   the token payload; the appraisal is
#                  input.claims.submods.cpu0 with "ear.status",
#                  "ear.trustworthiness-vector" and
#                  "ear.veraison.annotated-evidence" ({"<tee>": claims, ...})
#   input.request  {plugin: "resource", "resource-path": [repo, type, tag],
#                   repository, type, tag}
#
# Default: release any resource to a guest whose appraisal is affirming.
package policy

import rego.v1

default allow := false

appraisal := input.claims.submods.cpu0

allow if {
	input.request.plugin == "resource"
	appraisal["ear.status"] == "affirming"
}

# Example: keep sim-attested guests (development TEE) away from everything
# but the "dev" repository.
#
# allow if {
# 	input.request.plugin == "resource"
# 	appraisal["ear.status"] == "affirming"
# 	not appraisal["ear.veraison.annotated-evidence"].sim
# }
#
# allow if {
# 	appraisal["ear.status"] == "affirming"
# 	appraisal["ear.veraison.annotated-evidence"].sim
# 	input.request.repository == "dev"
# }

reasons contains msg if {
	appraisal["ear.status"] != "affirming"
	msg := sprintf("ear.status is %q: want \"affirming\"", [appraisal["ear.status"]])
}

reasons contains msg if {
	input.request.plugin != "resource"
	msg := sprintf("plugin %q is not served", [input.request.plugin])
}
