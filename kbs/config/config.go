// Package config is cc-kbs's TOML configuration: its keys, their
// documented defaults (configs/kbs/cc-kbs.toml shows every one), loading
// and validation. Plain HTTP is not a configuration key: it takes the
// explicit --insecure-http flag.
package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Duration is a time.Duration written as a Go duration string ("5m").
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("parse duration %q: want a Go duration such as \"5m\" or \"1h\": %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalText formats the duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// TCB is an SNP TCB floor by component.
type TCB struct {
	Bootloader uint8 `toml:"bootloader"`
	TEE        uint8 `toml:"tee"`
	SNP        uint8 `toml:"snp"`
	Microcode  uint8 `toml:"microcode"`
}

// Config is the whole cc-kbs configuration.
type Config struct {
	// Listen is the TCP address, host:port. Default "0.0.0.0:8080".
	Listen string `toml:"listen"`
	// DataDir holds kbs.db, token-signing-key.pem and the generated TLS
	// key and certificate. Default "/var/lib/cc-kbs".
	DataDir string `toml:"data_dir"`
	// MaxBodyBytes bounds request bodies. Default 1048576 (1 MiB).
	MaxBodyBytes int64 `toml:"max_body_bytes"`
	// Issuer is the attestation token "iss". Default "cc-kbs".
	Issuer  string  `toml:"issuer"`
	TLS     TLS     `toml:"tls"`
	Admin   Admin   `toml:"admin"`
	Session Session `toml:"session"`
	Token   Token   `toml:"token"`
	TEE     TEEs    `toml:"tee"`
	Runtime Runtime `toml:"runtime"`
}

// Runtime tunes the Go runtime of the cc-kbs process (Apply).
type Runtime struct {
	// GCPercent is the garbage collector's target heap growth, percent
	// (runtime/debug.SetGCPercent). Default 400: cc-kbs's live heap is
	// small (compiled policies, the session table) and each handshake
	// allocates tens of KiB of short-lived request, evidence, policy and
	// token data, so at Go's default of 100 the collector runs several
	// times as often for little memory saved. A GOGC environment variable
	// overrides it. Range 10..10000.
	GCPercent int `toml:"gc_percent"`
	// MemoryLimitMiB is a soft memory limit, MiB
	// (runtime/debug.SetMemoryLimit): near it the collector runs more
	// often whatever GCPercent says. 0 (default): no limit. A GOMEMLIMIT
	// environment variable overrides it.
	MemoryLimitMiB int64 `toml:"memory_limit_mib"`
}

// Apply sets the garbage collector target and the soft memory limit of
// this process, except for any that the GOGC or GOMEMLIMIT environment
// variables set.
func (r Runtime) Apply() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(r.GCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" && r.MemoryLimitMiB > 0 {
		debug.SetMemoryLimit(r.MemoryLimitMiB << 20)
	}
}

// TLS configures HTTPS (on unless --insecure-http).
type TLS struct {
	// Cert and Key are PEM files. Empty: DataDir/tls.crt and DataDir/tls.key,
	// generated on first start (self-signed ECDSA P-256, 10 years).
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
	// Hosts are the DNS names and IPs of the generated certificate.
	// Default ["localhost", "127.0.0.1", "::1"].
	Hosts []string `toml:"hosts"`
}

// Admin configures the admin API.
type Admin struct {
	// PublicKey is the Ed25519 PKIX PEM admin JWTs must verify against
	// (`ccctl kbs keygen-admin` writes it). Empty: admin API disabled.
	PublicKey string `toml:"public_key"`
	// MaxTokenLifetime bounds exp - iat of admin JWTs. Default "1h".
	MaxTokenLifetime Duration `toml:"max_token_lifetime"`
}

// Session configures RCAR sessions.
type Session struct {
	// TTL is a session's lifetime from /auth. Default "5m".
	TTL Duration `toml:"ttl"`
	// MaxSessions bounds the session table. Default 100000.
	MaxSessions int `toml:"max_sessions"`
}

// Token configures attestation tokens.
type Token struct {
	// TTL is a token's lifetime. Default "5m".
	TTL Duration `toml:"ttl"`
}

// TEEs configures the verifiers.
type TEEs struct {
	SNP SNP `toml:"snp"`
	TDX TDX `toml:"tdx"`
	Sim Sim `toml:"sim"`
}

// SNP configures AMD SEV-SNP evidence.
type SNP struct {
	// Enabled accepts SNP evidence. Default true.
	Enabled bool `toml:"enabled"`
	// MinTCB is the floor for REPORTED_TCB, COMMITTED_TCB and LAUNCH_TCB,
	// enforced by the verifier and seen by the attestation policy as
	// tcb_floor when the reference values set none. Default all 0.
	MinTCB TCB `toml:"min_tcb"`
	// AllowDebug accepts guests whose policy allows debugging. Default false.
	AllowDebug bool `toml:"allow_debug"`
	// CertDir is an offline VCEK store (Trustee kds-store layout:
	// vcek/<chip-id>/...). Default "" (unused).
	CertDir string `toml:"cert_dir"`
	// Product pins "Milan", "Genoa" or "Turin". Default "" (any).
	Product string `toml:"product"`
	// KDS fetches missing VCEKs from AMD KDS (network access), cached per
	// chip and TCB. Default false.
	KDS bool `toml:"kds"`
	// Revocation is how AMD's CRL (KDS /vcek/v1/<line>/crl, or crl.der /
	// crl.pem in CertDir) is used: "if-available" checks the ASK and the
	// VCEK/VLEK against it when a CRL is at hand (CertDir, or KDS when kds
	// is on), "required" refuses evidence when none is, "off" never checks.
	// Default "if-available".
	Revocation string `toml:"revocation"`
}

// SNP revocation modes (SNP.Revocation).
const (
	RevocationIfAvailable = "if-available"
	RevocationRequired    = "required"
	RevocationOff         = "off"
)

// TDX configures Intel TDX evidence.
type TDX struct {
	// Enabled accepts TDX evidence. Default true.
	Enabled bool `toml:"enabled"`
	// CollateralDir is an offline collateral directory. Default "" (the
	// verifier's default source).
	CollateralDir string `toml:"collateral_dir"`
	// MinTeeTCBSVN is the TEE_TCB_SVN floor, 32 hex characters. Default "".
	MinTeeTCBSVN string `toml:"min_tee_tcb_svn"`
	// AllowDebug accepts debug TDs. Default false.
	AllowDebug bool `toml:"allow_debug"`
	// PCS fetches missing collateral from Intel PCS (network). Default false.
	PCS bool `toml:"pcs"`
}

// Sim configures Coffer's software TEE.
type Sim struct {
	// RootPEM is the PEM file holding the sim ARK and ASK certificates.
	// Sim evidence is accepted ONLY if this is set. Default "".
	RootPEM string `toml:"root_pem"`
	// MinTCB, AllowDebug: as for SNP.
	MinTCB     TCB  `toml:"min_tcb"`
	AllowDebug bool `toml:"allow_debug"`
}

// DefaultGCPercent is the default runtime.gc_percent.
const DefaultGCPercent = 400

// Default returns the documented defaults.
func Default() Config {
	return Config{
		Listen:       "0.0.0.0:8080",
		DataDir:      "/var/lib/cc-kbs",
		MaxBodyBytes: 1 << 20,
		Issuer:       "cc-kbs",
		TLS:          TLS{Hosts: []string{"localhost", "127.0.0.1", "::1"}},
		Admin:        Admin{MaxTokenLifetime: Duration(time.Hour)},
		Session:      Session{TTL: Duration(5 * time.Minute), MaxSessions: 100000},
		Token:        Token{TTL: Duration(5 * time.Minute)},
		TEE:          TEEs{SNP: SNP{Enabled: true, Revocation: RevocationIfAvailable}, TDX: TDX{Enabled: true}},
		Runtime:      Runtime{GCPercent: DefaultGCPercent},
	}
}

// Load returns Default() overlaid with the TOML file at path (unknown keys
// are errors), validated. An empty path means defaults only.
func Load(path string) (Config, error) {
	c := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("read cc-kbs config: %w", err)
		}
		d := toml.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		if err := d.Decode(&c); err != nil {
			var sme *toml.StrictMissingError
			if errors.As(err, &sme) {
				return Config{}, fmt.Errorf("parse cc-kbs config %s: unknown keys (see configs/kbs/cc-kbs.toml for the valid ones):\n%s", path, sme.String())
			}
			return Config{}, fmt.Errorf("parse cc-kbs config %s: %w", path, err)
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("cc-kbs config %s: %w", path, err)
	}
	return c, nil
}

// Validate checks values and ranges.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen %q: want host:port: %w", c.Listen, err)
	}
	if c.DataDir == "" || !filepath.IsAbs(c.DataDir) {
		return fmt.Errorf("data_dir %q: want an absolute directory path", c.DataDir)
	}
	if c.MaxBodyBytes < 4096 || c.MaxBodyBytes > 64<<20 {
		return fmt.Errorf("max_body_bytes %d: want 4096..%d", c.MaxBodyBytes, 64<<20)
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		return errors.New("tls: set both cert and key, or neither to generate them")
	}
	if time.Duration(c.Session.TTL) < time.Second || time.Duration(c.Token.TTL) < time.Second {
		return fmt.Errorf("session.ttl %s and token.ttl %s: want at least 1s", time.Duration(c.Session.TTL), time.Duration(c.Token.TTL))
	}
	if c.Session.MaxSessions < 1 {
		return fmt.Errorf("session.max_sessions %d: want at least 1", c.Session.MaxSessions)
	}
	if time.Duration(c.Admin.MaxTokenLifetime) < time.Minute {
		return fmt.Errorf("admin.max_token_lifetime %s: want at least 1m", time.Duration(c.Admin.MaxTokenLifetime))
	}
	if s := c.TEE.TDX.MinTeeTCBSVN; s != "" {
		if b, err := hex.DecodeString(s); err != nil || len(b) != 16 {
			return fmt.Errorf("tee.tdx.min_tee_tcb_svn %q: want 32 hex characters", s)
		}
		c.TEE.TDX.MinTeeTCBSVN = strings.ToLower(s)
	}
	switch c.TEE.SNP.Product {
	case "", "Milan", "Genoa", "Turin":
	default:
		return fmt.Errorf("tee.snp.product %q: want \"Milan\", \"Genoa\", \"Turin\" or empty", c.TEE.SNP.Product)
	}
	switch c.TEE.SNP.Revocation {
	case RevocationIfAvailable, RevocationRequired, RevocationOff:
	default:
		return fmt.Errorf("tee.snp.revocation %q: want %q, %q or %q", c.TEE.SNP.Revocation, RevocationIfAvailable, RevocationRequired, RevocationOff)
	}
	if c.Runtime.GCPercent < 10 || c.Runtime.GCPercent > 10000 {
		return fmt.Errorf("runtime.gc_percent %d: want 10..10000", c.Runtime.GCPercent)
	}
	if c.Runtime.MemoryLimitMiB < 0 || c.Runtime.MemoryLimitMiB > 1<<30 {
		return fmt.Errorf("runtime.memory_limit_mib %d: want 0 (none) or a size in MiB", c.Runtime.MemoryLimitMiB)
	}
	if !c.TEE.SNP.Enabled && !c.TEE.TDX.Enabled && c.TEE.Sim.RootPEM == "" {
		return errors.New("no TEE enabled: enable tee.snp or tee.tdx, or set tee.sim.root_pem")
	}
	return nil
}

// DBPath is DataDir/kbs.db.
func (c *Config) DBPath() string { return filepath.Join(c.DataDir, "kbs.db") }

// TokenKeyPath is DataDir/token-signing-key.pem.
func (c *Config) TokenKeyPath() string { return filepath.Join(c.DataDir, "token-signing-key.pem") }

// TLSPaths returns the certificate and key paths and whether they are the
// generated defaults.
func (c *Config) TLSPaths() (cert, key string, generated bool) {
	if c.TLS.Cert != "" {
		return c.TLS.Cert, c.TLS.Key, false
	}
	return filepath.Join(c.DataDir, "tls.crt"), filepath.Join(c.DataDir, "tls.key"), true
}
