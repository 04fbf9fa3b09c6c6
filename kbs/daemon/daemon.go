// Package daemon runs cc-kbs: it turns a config.Config into the store,
// keys, verifiers, session table and kbs/server, serves HTTPS (or, only
// with the explicit InsecureHTTP option, plain HTTP) and shuts down
// gracefully when its context ends. cmd/cc-kbs is a thin wrapper around
// Run.
package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"

	kbsconfig "github.com/cofferhq/coffer/configs/kbs"
	"github.com/cofferhq/coffer/kbs/admin"
	"github.com/cofferhq/coffer/kbs/config"
	"github.com/cofferhq/coffer/kbs/refvalues"
	"github.com/cofferhq/coffer/kbs/server"
	"github.com/cofferhq/coffer/kbs/session"
	"github.com/cofferhq/coffer/kbs/store"
	"github.com/cofferhq/coffer/kbs/token"
)

// ShutdownTimeout bounds graceful shutdown.
const ShutdownTimeout = 10 * time.Second

// Options configure Run.
type Options struct {
	// Config is the loaded, validated configuration.
	Config config.Config
	// InsecureHTTP serves plain HTTP instead of HTTPS. Only the
	// --insecure-http flag sets it.
	InsecureHTTP bool
	// Out receives the start-up banner (listen address, TLS fingerprint);
	// nil means os.Stdout.
	Out io.Writer
	// Ready, if set, is called with the bound address once serving.
	Ready func(addr net.Addr)
}

// Run serves until ctx is done, then shuts down gracefully (in-flight
// requests get ShutdownTimeout) and closes the store.
func Run(ctx context.Context, o Options) error {
	cfg := o.Config
	out := o.Out
	if out == nil {
		out = os.Stdout
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data_dir %s: %w", cfg.DataDir, err)
	}
	st, err := store.Open(cfg.DBPath(), store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()

	tokenKey, created, err := LoadOrCreateECKey(cfg.TokenKeyPath())
	if err != nil {
		return fmt.Errorf("token signing key: %w", err)
	}
	if created {
		fmt.Fprintf(out, "cc-kbs: generated token signing key %s (ECDSA P-256)\n", cfg.TokenKeyPath())
	}
	tokens, err := token.NewSigner(tokenKey, token.Options{Issuer: cfg.Issuer, TTL: time.Duration(cfg.Token.TTL)})
	if err != nil {
		return err
	}

	var adminV *admin.Verifier
	if cfg.Admin.PublicKey != "" {
		pub, err := admin.LoadPublicKey(cfg.Admin.PublicKey)
		if err != nil {
			return err
		}
		if adminV, err = admin.NewVerifier(pub, admin.Options{MaxLifetime: time.Duration(cfg.Admin.MaxTokenLifetime)}); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(out, "cc-kbs: admin API disabled ([admin] public_key is empty)")
	}

	verifiers, err := BuildVerifiers(cfg.TEE)
	if err != nil {
		return err
	}
	sessions := session.New(session.Options{TTL: time.Duration(cfg.Session.TTL), MaxSessions: cfg.Session.MaxSessions})
	snpFloor := refvalues.TCB(cfg.TEE.SNP.MinTCB)
	srv, err := server.New(ctx, server.Config{
		Verifiers:                verifiers,
		Store:                    st,
		Sessions:                 sessions,
		Tokens:                   tokens,
		Admin:                    adminV,
		DefaultAttestationPolicy: kbsconfig.DefaultAttestationPolicy,
		DefaultResourcePolicy:    kbsconfig.DefaultResourcePolicy,
		SNPMinTCB:                &snpFloor,
		TDXMinTeeTCBSVN:          cfg.TEE.TDX.MinTeeTCBSVN,
		MaxBody:                  cfg.MaxBodyBytes,
	})
	if err != nil {
		return err
	}

	errLog := log.G(ctx).WriterLevel(logrus.InfoLevel)
	defer errLog.Close()
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		// net/http's own errors (TLS handshakes, malformed requests) go to
		// the structured log rather than bare stderr.
		ErrorLog: stdlog.New(errLog, "http: ", 0),
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	scheme := "http"
	if !o.InsecureHTTP {
		certPath, keyPath, gen := cfg.TLSPaths()
		cert, created, err := LoadOrCreateTLS(certPath, keyPath, cfg.TLS.Hosts, gen)
		if err != nil {
			ln.Close()
			return err
		}
		fp := Fingerprint(cert.Certificate[0])
		if created {
			fmt.Fprintf(out, "cc-kbs: generated TLS certificate %s for %v\n", certPath, cfg.TLS.Hosts)
		}
		fmt.Fprintf(out, "cc-kbs: TLS certificate %s SHA-256 fingerprint %s\n", certPath, fp)
		fmt.Fprintf(out, "cc-kbs: pin it with: ccctl kbs --cert-sha256 %s ...\n", fp)
		hs.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		ln = tls.NewListener(ln, hs.TLSConfig)
		scheme = "https"
	} else {
		fmt.Fprintln(out, "cc-kbs: WARNING: serving plain HTTP (--insecure-http): the KBS identity is not authenticated")
	}
	fmt.Fprintf(out, "cc-kbs: serving KBS protocol %s on %s://%s (TEEs: %s)\n", "0.4.0", scheme, ln.Addr(), teeList(verifiers))

	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if n := sessions.Sweep(); n > 0 {
					log.G(ctx).WithField("swept", n).Debug("kbs: expired sessions removed")
				}
			}
		}
	}()

	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	if o.Ready != nil {
		o.Ready(ln.Addr())
	}
	select {
	case err := <-serveErr:
		<-sweepDone
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	err = hs.Shutdown(sctx)
	<-serveErr
	<-sweepDone
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shut down: %w", err)
	}
	fmt.Fprintln(out, "cc-kbs: stopped")
	return nil
}
