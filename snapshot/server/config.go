// Package server runs cc-snapshotter: it loads the configuration file and
// serves the snapshot package's Snapshotter as containerd's snapshots gRPC
// API (containerd.services.snapshots.v1.Snapshots) on a unix socket, the
// protocol of containerd's [proxy_plugins] (docs/PLUGINS.md in containerd).
package server

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/sirupsen/logrus"
)

// Defaults of Config; configs/snapshotter/cc-snapshotter.toml documents
// them.
const (
	// DefaultConfigPath is read when no configuration file is named; a
	// missing file there means "all defaults".
	DefaultConfigPath = "/etc/coffer/snapshotter.toml"
	// DefaultRootPath holds the metadata database (metadata.db) and
	// nothing else.
	DefaultRootPath = "/var/lib/coffer/snapshotter"
	// DefaultAddress is the unix socket containerd's
	// [proxy_plugins.cc] address must name.
	DefaultAddress = "/run/coffer/snapshotter.sock"
	// DefaultLogLevel is the logrus level name.
	DefaultLogLevel = "info"
)

// maxSocketPath is the longest unix socket path Linux accepts
// (sizeof(sun_path) - 1, unix(7)).
const maxSocketPath = 107

// Config is cc-snapshotter's configuration file (TOML). Unknown keys are an
// error.
type Config struct {
	// RootPath is the absolute directory holding metadata.db.
	RootPath string `toml:"root_path"`
	// Address is the absolute path of the unix socket to serve on, at most
	// 107 bytes.
	Address string `toml:"address"`
	// LogLevel is one of "trace", "debug", "info", "warn", "error",
	// "fatal", "panic".
	LogLevel string `toml:"log_level"`
}

// DefaultConfig returns the configuration used when no file is given.
func DefaultConfig() Config {
	return Config{RootPath: DefaultRootPath, Address: DefaultAddress, LogLevel: DefaultLogLevel}
}

// LoadConfig reads the TOML file at path over DefaultConfig and validates
// the result. A missing file gives an error wrapping fs.ErrNotExist; an
// unknown key or a bad value gives an error naming it.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read cc-snapshotter config: %w", err)
	}
	cfg := DefaultConfig()
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			var keys []string
			for _, e := range strict.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return Config{}, fmt.Errorf("parse cc-snapshotter config %s: unknown key(s) %s: want only root_path, address, log_level", path, strings.Join(keys, ", "))
		}
		return Config{}, fmt.Errorf("parse cc-snapshotter config %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("cc-snapshotter config %s: %w", path, err)
	}
	return cfg, nil
}

// Validate checks that RootPath and Address are absolute, that Address
// fits in a unix socket address, and that LogLevel is a logrus level.
func (c Config) Validate() error {
	if !filepath.IsAbs(c.RootPath) {
		return fmt.Errorf("root_path %q is not an absolute path", c.RootPath)
	}
	if !filepath.IsAbs(c.Address) {
		return fmt.Errorf("address %q is not an absolute socket path", c.Address)
	}
	if len(c.Address) > maxSocketPath {
		return fmt.Errorf("address %q is %d bytes long, a unix socket path can have at most %d", c.Address, len(c.Address), maxSocketPath)
	}
	if _, err := logrus.ParseLevel(c.LogLevel); err != nil {
		return fmt.Errorf("log_level %q: want trace, debug, info, warn, error, fatal or panic", c.LogLevel)
	}
	return nil
}
