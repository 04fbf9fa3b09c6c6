package policy

import (
	"bytes"
	"encoding/json"
	"fmt"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// requestJSON is the protojson of req as the policy's input.request: proto
// field names, every field present, OCI JSON byte fields decoded into
// objects and PullImageRequest's effective image added.
func requestJSON(req proto.Message) (map[string]any, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(withoutJSONBytes(req))
	if err != nil {
		return nil, fmt.Errorf("encode %s as JSON: %w", req.ProtoReflect().Descriptor().Name(), err)
	}
	m, err := decodeObject(b)
	if err != nil {
		return nil, fmt.Errorf("decode %s JSON: %w", req.ProtoReflect().Descriptor().Name(), err)
	}
	switch r := req.(type) {
	case *agent.CreateContainerRequest:
		m["oci_spec"], err = canonical(r.GetOciSpec(), &specs.Spec{})
		if err != nil {
			return nil, fmt.Errorf("CreateContainerRequest.oci_spec is not an OCI runtime spec: %w", err)
		}
	case *agent.ExecProcessRequest:
		m["process"], err = canonical(r.GetProcess(), &specs.Process{})
		if err != nil {
			return nil, fmt.Errorf("ExecProcessRequest.process is not an OCI process: %w", err)
		}
	case *agent.PullImageRequest:
		img, err := pulledImage(r)
		if err != nil {
			return nil, err
		}
		m["image"] = map[string]any{"name": img.Name, "digest": img.Digest}
	}
	return m, nil
}

// withoutJSONBytes returns req, or for the requests carrying OCI JSON in a
// bytes field a shallow copy without it: requestJSON replaces that field
// with the decoded object anyway, so protojson need not base64-encode it
// (and decodeObject need not decode the base64 string again).
func withoutJSONBytes(req proto.Message) proto.Message {
	switch r := req.(type) {
	case *agent.CreateContainerRequest:
		if len(r.GetOciSpec()) > 0 {
			c := shallowCopy(r)
			c.OciSpec = nil
			return c
		}
	case *agent.ExecProcessRequest:
		if len(r.GetProcess()) > 0 {
			c := shallowCopy(r)
			c.Process = nil
			return c
		}
	}
	return req
}

// shallowCopy copies m's populated fields into a new message of its type,
// sharing their values (bytes, lists, messages) with m.
func shallowCopy[M proto.Message](m M) M {
	src := m.ProtoReflect()
	dst := src.New()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		dst.Set(fd, v)
		return true
	})
	return dst.Interface().(M)
}

// canonical decodes raw into v (an OCI runtime-spec type, as the agent
// does), encodes v again and returns it as a JSON object: the policy sees
// the fields the agent will use, whatever duplicate, unknown or
// differently-cased keys the host sent.
func canonical(raw []byte, v any) (map[string]any, error) {
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return decodeObject(b)
}

// decodeObject decodes a JSON object keeping numbers exact (json.Number).
func decodeObject(b []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}
