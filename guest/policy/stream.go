package policy

import (
	"context"
	"strings"

	agent "github.com/cofferhq/coffer/api/agent/v1"
)

// Stream names as AllowStream takes them.
const (
	StreamStdin  = "stdin"
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// StreamName returns "stdin", "stdout" or "stderr" for a StreamKind, "" for
// STREAM_KIND_UNSPECIFIED or an unknown kind.
func StreamName(k agent.StreamKind) string {
	switch k {
	case agent.StreamKind_STREAM_KIND_STDIN:
		return StreamStdin
	case agent.StreamKind_STREAM_KIND_STDOUT:
		return StreamStdout
	case agent.StreamKind_STREAM_KIND_STDERR:
		return StreamStderr
	}
	return ""
}

// AllowStream reports whether the host may attach the named stdio stream
// ("stdin", "stdout" or "stderr") of a process (execID "" for the
// container's init). stdout and stderr are decided by ReadStreamRequest,
// stdin by WriteStreamRequest, with input.request = {container_id,
// exec_id, stream}. Any other stream name, a false or undefined rule and
// an evaluation error all give false. On false the agent must not block
// the workload: it drains and discards a denied output (the process never
// stalls on a full pipe), gives a denied stdin EOF, and closes the host's
// connection for that stream.
func (e *Engine) AllowStream(containerID, execID, stream string) bool {
	var rule string
	switch strings.ToLower(stream) {
	case StreamStdout, StreamStderr:
		rule = RuleReadStream
	case StreamStdin:
		rule = RuleWriteStream
	default:
		return false
	}
	req := map[string]any{"container_id": containerID, "exec_id": execID, "stream": strings.ToLower(stream)}
	return e.decide(context.Background(), rule, req) == nil
}
