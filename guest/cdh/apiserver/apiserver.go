// Package apiserver serves KBS resources to workloads inside the guest, in
// the shape of CoCo's api-server-rest (guest-components api-server-rest,
// src/cdh.rs):
//
//	GET http://127.0.0.1:8006/cdh/resource/<repository>/<type>/<tag>
//
// answers with the bytes of the KBS resource kbs:///<repository>/<type>/<tag>
// (fetched through the attested KBS session of the confidential data hub),
// as application/octet-stream. Containers share the guest's network
// namespace, so a workload reads a secret with e.g.
//
//	wget -qO- http://127.0.0.1:8006/cdh/resource/default/key/1
//
// Errors are one line of text/plain: 400 for a malformed path (each of the
// three segments must be 1..128 bytes of [A-Za-z0-9._-] not starting with
// '.', no percent-encoding: kbs/resourcepath), 403 when the client is not on
// loopback or the KBS refuses the resource, 404 for an unknown endpoint or
// resource, 405 for a method other than GET, 502 when the KBS cannot be
// reached or attestation failed.
package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/cofferhq/coffer/guest/cdh"
	"github.com/cofferhq/coffer/kbs/resourcepath"
)

// DefaultAddress is where the guest serves the API (CoCo's api-server-rest
// default).
const DefaultAddress = "127.0.0.1:8006"

// ResourcePath prefixes resource requests: ResourcePath +
// "<repository>/<type>/<tag>".
const ResourcePath = "/cdh/resource/"

// shutdownTimeout bounds the wait for in-flight requests when Serve's
// context ends.
const shutdownTimeout = 5 * time.Second

// Handler returns the API's HTTP handler, serving resources from rg.
func Handler(rg cdh.ResourceGetter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveResource(w, r, rg)
	})
}

// Serve serves the API on ln until ctx ends, then shuts the server down
// (waiting up to 5 s for requests in flight) and returns nil. It returns
// the server's error if serving fails otherwise. ln is closed on return.
func Serve(ctx context.Context, ln net.Listener, rg cdh.ResourceGetter) error {
	srv := &http.Server{
		Handler:           Handler(rg),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				log.G(ctx).WithError(err).Warn("cdh api server: shutdown did not complete; closing")
				srv.Close()
			}
		case <-done:
		}
	}()
	log.G(ctx).WithField("address", ln.Addr().String()).Info("cdh api server: serving " + ResourcePath + "<repository>/<type>/<tag>")
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serve cdh api on %s: %w", ln.Addr(), err)
}

// serveResource handles one request.
func serveResource(w http.ResponseWriter, r *http.Request, rg cdh.ResourceGetter) {
	ctx := r.Context()
	path := r.URL.EscapedPath()
	lg := log.G(ctx).WithField("path", path).WithField("remote", r.RemoteAddr)
	if !fromLoopback(r.RemoteAddr) {
		lg.Warn("cdh api server: refused a client not on loopback")
		fail(w, http.StatusForbidden, "only clients on loopback may read resources")
		return
	}
	rest, ok := strings.CutPrefix(path, ResourcePath)
	if !ok {
		fail(w, http.StatusNotFound, "no such endpoint "+strconv.Quote(path)+": want GET "+ResourcePath+"<repository>/<type>/<tag>")
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		fail(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed: use GET")
		return
	}
	rp, err := resourcepath.Parse(rest)
	if err != nil {
		fail(w, http.StatusBadRequest, err.Error())
		return
	}
	uri := "kbs:///" + rp.String()
	v, err := rg.Resource(ctx, uri)
	if err != nil {
		status := statusOf(err)
		lg.WithError(err).WithField("status", status).Warn("cdh api server: resource not served")
		fail(w, status, "resource "+uri+": "+err.Error())
		return
	}
	lg.WithField("bytes", len(v)).Info("cdh api server: resource served")
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(v)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(v)
}

// statusOf maps a ResourceGetter error to an HTTP status by its errdefs
// class.
func statusOf(err error) int {
	switch {
	case errdefs.IsNotFound(err):
		return http.StatusNotFound
	case errdefs.IsPermissionDenied(err), errdefs.IsUnauthorized(err):
		return http.StatusForbidden
	case errdefs.IsInvalidArgument(err):
		return http.StatusBadRequest
	default:
		return http.StatusBadGateway
	}
}

// fromLoopback reports whether remote ("ip:port" for TCP) is a loopback
// address; non-IP addresses (unix sockets, vsock) are local by nature and
// accepted.
func fromLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip == nil || ip.IsLoopback()
}

// fail writes status with reason as one line of text.
func fail(w http.ResponseWriter, status int, reason string) {
	reason = strings.Join(strings.Fields(reason), " ")
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = fmt.Fprintln(w, reason)
}
