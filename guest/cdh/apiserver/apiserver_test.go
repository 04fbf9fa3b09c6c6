package apiserver

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log/logtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeCDH is a cdh.ResourceGetter with fixed answers that records the URIs
// asked for.
type fakeCDH struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeCDH) Resource(_ context.Context, uri string) ([]byte, error) {
	f.mu.Lock()
	f.calls = append(f.calls, uri)
	f.mu.Unlock()
	switch uri {
	case "kbs:///default/key/1":
		return []byte("secret\x00bytes\n"), nil
	case "kbs:///default/key/denied":
		return nil, fmt.Errorf("KBS denied resource default/key/denied by rule\nallow_resource: %w", errdefs.ErrPermissionDenied)
	case "kbs:///default/key/down":
		return nil, fmt.Errorf("KBS unreachable at https://10.0.2.2:8080: connection refused: %w", errdefs.ErrUnavailable)
	default:
		return nil, fmt.Errorf("resource %s not found in the KBS: %w", uri, errdefs.ErrNotFound)
	}
}

func (f *fakeCDH) asked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// do runs one request against Handler from remote.
func do(t *testing.T, h http.Handler, method, target, remote string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	req = req.WithContext(logtest.WithT(req.Context(), t))
	req.RemoteAddr = remote
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestHandler(t *testing.T) {
	const local = "127.0.0.1:40000"
	for _, tc := range []struct {
		name, method, target, remote string
		status                       int
		body                         string // exact body
		asks                         []string
	}{
		{"ok", "GET", "/cdh/resource/default/key/1", local, 200, "secret\x00bytes\n", []string{"kbs:///default/key/1"}},
		{"ipv6 loopback", "GET", "/cdh/resource/default/key/1", "[::1]:40000", 200, "secret\x00bytes\n", []string{"kbs:///default/key/1"}},
		{"not found", "GET", "/cdh/resource/default/key/nope", local, 404,
			"resource kbs:///default/key/nope: resource kbs:///default/key/nope not found in the KBS: not found\n", []string{"kbs:///default/key/nope"}},
		{"denied", "GET", "/cdh/resource/default/key/denied", local, 403,
			"resource kbs:///default/key/denied: KBS denied resource default/key/denied by rule allow_resource: permission denied\n", []string{"kbs:///default/key/denied"}},
		{"kbs down", "GET", "/cdh/resource/default/key/down", local, 502,
			"resource kbs:///default/key/down: KBS unreachable at https://10.0.2.2:8080: connection refused: unavailable\n", []string{"kbs:///default/key/down"}},
		{"post", "POST", "/cdh/resource/default/key/1", local, 405, "method POST not allowed: use GET\n", nil},
		{"head", "HEAD", "/cdh/resource/default/key/1", local, 405, "method HEAD not allowed: use GET\n", nil},
		{"other endpoint", "GET", "/aa/token", local, 404, "no such endpoint \"/aa/token\": want GET /cdh/resource/<repository>/<type>/<tag>\n", nil},
		{"not loopback", "GET", "/cdh/resource/default/key/1", "10.0.2.15:40000", 403, "only clients on loopback may read resources\n", nil},
		{"two segments", "GET", "/cdh/resource/default/key", local, 400, "", nil},
		{"four segments", "GET", "/cdh/resource/default/key/1/2", local, 400, "", nil},
		{"dot dot", "GET", "/cdh/resource/../key/1", local, 400, "", nil},
		{"dot dot inside", "GET", "/cdh/resource/default/../1", local, 400, "", nil},
		{"encoded dot dot", "GET", "/cdh/resource/default/%2e%2e/1", local, 400, "", nil},
		{"encoded slash", "GET", "/cdh/resource/default/key%2F1/x", local, 400, "", nil},
		{"empty segment", "GET", "/cdh/resource/default//1", local, 400, "", nil},
		{"hidden", "GET", "/cdh/resource/default/.key/1", local, 400, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeCDH{}
			rec := do(t, Handler(f), tc.method, tc.target, tc.remote)
			assert.Equal(t, tc.status, rec.Code)
			body := rec.Body.String()
			t.Logf("%d %q", rec.Code, body)
			if tc.body != "" {
				assert.Equal(t, tc.body, body)
			}
			assert.Equal(t, tc.asks, f.asked())
			if tc.status == 200 {
				assert.Equal(t, "application/octet-stream", rec.Header().Get("Content-Type"))
				assert.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
				return
			}
			assert.Equal(t, "text/plain; charset=utf-8", rec.Header().Get("Content-Type"))
			assert.Equal(t, 1, strings.Count(body, "\n"), "one line: %q", body)
			if tc.status == 400 {
				assert.Contains(t, body, "invalid resource path")
			}
			if tc.status == 405 {
				assert.Equal(t, "GET", rec.Header().Get("Allow"))
			}
		})
	}
}

func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(logtest.WithT(context.Background(), t))
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := &fakeCDH{}
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, f) }()

	resp, err := http.Get("http://" + ln.Addr().String() + ResourcePath + "default/key/1")
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "secret\x00bytes\n", string(b))

	// A raw request line, so no client cleans the path first.
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	_, err = io.WriteString(c, "GET /cdh/resource/../../etc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	require.NoError(t, err)
	raw, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	rb, _ := io.ReadAll(raw.Body)
	c.Close()
	assert.Equal(t, 400, raw.StatusCode, "%s", rb)
	assert.Equal(t, []string{"kbs:///default/key/1"}, f.asked())

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	_, err = net.Dial("tcp", ln.Addr().String())
	assert.Error(t, err, "the listener is closed")
}
