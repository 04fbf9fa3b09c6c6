package policy

import (
	"fmt"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Pseudo-request rules: decisions that are not ttrpc methods of the Agent
// service.
const (
	// RuleReadStream decides whether the host may read a process's stdout
	// or stderr stream.
	RuleReadStream = "ReadStreamRequest"
	// RuleWriteStream decides whether the host may write a process's stdin.
	RuleWriteStream = "WriteStreamRequest"
	// RuleSetPolicy decides whether the policy may be replaced at run time
	// (Engine.SetPolicy).
	RuleSetPolicy = "SetPolicyRequest"
	// RuleCopyFile is reserved: the agent API has no file-copy request, so
	// nothing evaluates it yet; policies define it so that a future one is
	// denied (or allowed) explicitly.
	RuleCopyFile = "CopyFileRequest"
)

// ruleReasons is the optional set rule that explains a denial.
const ruleReasons = "reasons"

// method is one ttrpc method of the Agent service.
type method struct {
	rule string // request message name, e.g. "ExecProcessRequest"
	req  protoreflect.MessageType
}

// agentMethods maps full ttrpc method names, "/coffer.agent.v1.Agent/
// ExecProcess", to their request types, from agent.proto's generated
// descriptor: a method added to the proto is covered (and, until a policy
// defines its rule, denied) without touching this package.
func agentMethods() (map[string]method, error) {
	sd := agent.File_agent_proto.Services().ByName("Agent")
	if sd == nil {
		return nil, fmt.Errorf("build policy method table: agent.proto has no service Agent")
	}
	out := make(map[string]method, sd.Methods().Len())
	for i := 0; i < sd.Methods().Len(); i++ {
		m := sd.Methods().Get(i)
		mt, err := protoregistry.GlobalTypes.FindMessageByName(m.Input().FullName())
		if err != nil {
			return nil, fmt.Errorf("build policy method table: request type %s of %s: %w", m.Input().FullName(), m.Name(), err)
		}
		out["/"+string(sd.FullName())+"/"+string(m.Name())] = method{rule: string(m.Input().Name()), req: mt}
	}
	return out, nil
}

// Rules returns every rule Engine evaluates: one per Agent request message
// in agent.proto order, then the pseudo-requests ReadStreamRequest,
// WriteStreamRequest, SetPolicyRequest and CopyFileRequest.
func Rules() []string {
	sd := agent.File_agent_proto.Services().ByName("Agent")
	out := make([]string, 0, sd.Methods().Len()+4)
	for i := 0; i < sd.Methods().Len(); i++ {
		out = append(out, string(sd.Methods().Get(i).Input().Name()))
	}
	return append(out, RuleReadStream, RuleWriteStream, RuleSetPolicy, RuleCopyFile)
}
