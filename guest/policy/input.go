package policy

import (
	"bytes"
	"encoding/json"
	"fmt"

	agent "github.com/cofferhq/coffer/api/agent/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// requestJSON is the protojson of req as the policy's input.request: proto
// field names, every field present, OCI JSON byte fields decoded into
// objects and PullImageRequest's effective image added.
func requestJSON(req proto.Message) (map[string]any, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(req)
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
