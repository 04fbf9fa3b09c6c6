// Package agent is version 1 of the API between containerd-shim-cc-v2 (host)
// and cc-agent (guest): the ttrpc Agent service generated from agent.proto,
// plus the framing of the raw stdio streams (stream.go).
//
// Regenerate the .pb.go files with `make generate`.
package agent
