package policy

import _ "embed"

// Default is the built-in default policy (default.rego in this directory,
// identical to configs/policy/default.rego): Rego v1, package agent_policy.
// cc-agent uses it when the pod has no init-data.
//
//go:embed default.rego
var Default string
