package cloudhypervisor

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/stretchr/testify/require"
)

// apiSchema is the loaded and validated OpenAPI document with a router
// over its paths.
type apiSchema struct {
	doc    *openapi3.T
	router routers.Router
}

// loadSchema loads Cloud Hypervisor's OpenAPI document with kin-openapi and
// checks that it is itself valid.
func loadSchema(t *testing.T) *apiSchema {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(schemaPath)
	require.NoError(t, err, "load %s", schemaPath)
	require.NoError(t, doc.Validate(loader.Context), "the schema document itself")
	router, err := legacy.NewRouter(doc)
	require.NoError(t, err)
	return &apiSchema{doc: doc, router: router}
}

// checkRequest validates r (method, path, and JSON body) against the
// schema. It restores r.Body for the handler.
func (s *apiSchema) checkRequest(t *testing.T, r *http.Request) *openapi3filter.RequestValidationInput {
	t.Helper()
	body, err := io.ReadAll(r.Body)
	require.NoError(t, err)
	r.Body = io.NopCloser(bytes.NewReader(body))
	// The schema's server is http://localhost/api/v1; requests on a unix
	// socket carry that host too.
	u := *r.URL
	u.Scheme, u.Host = "http", "localhost"
	rr := r.Clone(r.Context())
	rr.URL = &u
	rr.Body = io.NopCloser(bytes.NewReader(body))
	route, params, err := s.router.FindRoute(rr)
	require.NoError(t, err, "%s %s is not in the schema", r.Method, r.URL.Path)
	in := &openapi3filter.RequestValidationInput{Request: rr, PathParams: params, Route: route,
		Options: &openapi3filter.Options{MultiError: true}}
	require.NoError(t, openapi3filter.ValidateRequest(context.Background(), in), "%s %s body %s", r.Method, r.URL.Path, body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	return in
}

// checkResponse validates a response the fake server is about to send.
func (s *apiSchema) checkResponse(t *testing.T, in *openapi3filter.RequestValidationInput, status int, body []byte) {
	t.Helper()
	h := http.Header{}
	if len(body) > 0 {
		h.Set("Content-Type", "application/json")
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: h,
		Body: io.NopCloser(bytes.NewReader(body)), Options: &openapi3filter.Options{IncludeResponseStatus: true}}
	require.NoError(t, openapi3filter.ValidateResponse(context.Background(), out), "response %d %s to %s", status, body, in.Request.URL.Path)
}

// TestVMConfigMatchesSchema validates every vm.create body Coffer builds
// (TEE none, tdx, snp, and a tap network) against the schema's VmConfig.
func TestVMConfigMatchesSchema(t *testing.T) {
	s := loadSchema(t)
	ref := s.doc.Components.Schemas["VmConfig"]
	require.NotNil(t, ref, "schema VmConfig")
	for name, cfg := range teeConfigs(t) {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, cfg.validate(fakeDevice(t)))
			b, err := jsonOf(cfg.VMConfig())
			require.NoError(t, err)
			var v any
			require.NoError(t, decodeJSON(b, &v))
			require.NoError(t, ref.Value.VisitJSON(v, openapi3.MultiErrors()), "%s", b)
		})
	}
}

// TestAddNetBodyMatchesSchema validates the vm.add-net body Start sends for
// a tap passed by descriptor against the schema's NetConfig, and checks
// that such a tap stays out of vm.create's net list.
func TestAddNetBodyMatchesSchema(t *testing.T) {
	s := loadSchema(t)
	ref := s.doc.Components.Schemas["NetConfig"]
	require.NotNil(t, ref, "schema NetConfig")
	cfg := teeConfigs(t)["tapfd"]
	require.Empty(t, cfg.VMConfig().Net, "a tap passed by descriptor is not in vm.create")
	nc, files := cfg.TapNetConfig()
	require.NotNil(t, nc)
	require.Equal(t, []*os.File{cfg.Network.Tap.File}, files)
	require.Equal(t, 2*len(files), nc.NumQueues, "two virtqueues per tap queue")
	require.Empty(t, nc.Tap, "no tap name: Cloud Hypervisor must not open one in its own namespace")
	b, err := jsonOf(nc)
	require.NoError(t, err)
	require.JSONEq(t, `{"mac":"0a:58:0a:63:00:02","num_queues":2}`, string(b), "no mtu: Cloud Hypervisor would set it by interface name")
	var v any
	require.NoError(t, decodeJSON(b, &v))
	require.NoError(t, ref.Value.VisitJSON(v, openapi3.MultiErrors()), "%s", b)
	// The route exists and takes that body.
	req, err := http.NewRequest(http.MethodPut, apiBase+"/vm.add-net", bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	s.checkRequest(t, req)

	byName, _ := teeConfigs(t)["tap"].TapNetConfig()
	require.Nil(t, byName, "a tap by name needs no vm.add-net")
}

// TestSchemaRejectsBadBodies makes sure the validation above can fail: a
// body missing the required payload, a vsock CID below 3 and an unknown
// console mode are refused.
func TestSchemaRejectsBadBodies(t *testing.T) {
	ref := loadSchema(t).doc.Components.Schemas["VmConfig"]
	for _, body := range []string{
		`{"cpus":{"boot_vcpus":1,"max_vcpus":1}}`,
		`{"payload":{"kernel":"/k"},"vsock":{"cid":2,"socket":"/s"}}`,
		`{"payload":{"kernel":"/k"},"serial":{"mode":"Logfile"}}`,
		`{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":0,"max_vcpus":1}}`,
	} {
		var v any
		require.NoError(t, decodeJSON([]byte(body), &v))
		require.Error(t, ref.Value.VisitJSON(v), body)
	}
}
