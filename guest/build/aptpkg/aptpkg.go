// Package aptpkg fetches one pinned Debian binary package (.deb) with the
// host's apt, checks it against the SHA-256 in apt's signed package index,
// and unpacks it with dpkg-deb.
//
// The hash apt reports (`apt-cache show PKG=VERSION`, field SHA256) comes from
// the Packages index whose Release file apt verified against the archive
// keyring, so a matching .deb is the one the Debian archive published.
package aptpkg

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
)

// Info is the part of a package's apt index record the fetcher uses.
type Info struct {
	// Package and Version identify the record ("linux-image-6.1.0-57-cloud-amd64", "6.1.192-3").
	Package, Version string
	// Filename is the archive path ("pool/updates/main/l/…/x_6.1.192-3_amd64.deb").
	Filename string
	// SHA256 is the lower-case hex SHA-256 of the .deb (64 characters).
	SHA256 string
	// Size is the .deb's size in bytes.
	Size int64
}

// Show returns apt's index record for pkg at exactly version, by running
// `apt-cache show pkg=version`. It returns an error wrapping
// errdefs.ErrNotFound, telling the user to run `apt-get update` or change the
// pin, when apt does not know that version, and an error naming the missing
// field when the record has no Filename or SHA256.
func Show(ctx context.Context, pkg, version string) (*Info, error) {
	advice := fmt.Sprintf("run `apt-get update`, or bump the pinned version to one `apt-cache policy %s` lists", pkg)
	cmd := exec.CommandContext(ctx, "apt-cache", "show", pkg+"="+version)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			// apt-cache exits 100 ("E: No packages found") for an unknown package.
			return nil, fmt.Errorf("look up %s=%s in apt: %s: %w: %s",
				pkg, version, strings.TrimSpace(stderr.String()), errdefs.ErrNotFound, advice)
		}
		return nil, fmt.Errorf("run apt-cache (the guest builder needs Debian's apt): %w", err)
	}
	// An unknown version of a known package prints nothing and exits 0.
	info, err := parseShow(out, pkg, version)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("look up %s=%s in apt: %w: %s", pkg, version, err, advice)
	}
	if err != nil {
		return nil, fmt.Errorf("look up %s=%s in apt: %w", pkg, version, err)
	}
	return info, nil
}

// parseShow picks the first record of apt-cache show output that matches pkg
// and version.
func parseShow(out []byte, pkg, version string) (*Info, error) {
	for _, stanza := range strings.Split(string(out), "\n\n") {
		fields := map[string]string{}
		s := bufio.NewScanner(strings.NewReader(stanza))
		s.Buffer(make([]byte, 64*1024), 1024*1024)
		for s.Scan() {
			line := s.Text()
			if line == "" || line[0] == ' ' || line[0] == '\t' {
				continue // continuation lines of multi-line fields
			}
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[k] = strings.TrimSpace(v)
			}
		}
		if fields["Package"] != pkg || fields["Version"] != version {
			continue
		}
		info := &Info{Package: pkg, Version: version, Filename: fields["Filename"], SHA256: strings.ToLower(fields["SHA256"])}
		if info.Filename == "" {
			return nil, errors.New("apt record has no Filename field")
		}
		if len(info.SHA256) != sha256.Size*2 {
			return nil, fmt.Errorf("apt record SHA256 field is %q, want 64 hex characters", fields["SHA256"])
		}
		if sz, err := strconv.ParseInt(fields["Size"], 10, 64); err == nil {
			info.Size = sz
		}
		return info, nil
	}
	return nil, fmt.Errorf("apt-cache printed no record for Package %s Version %s: %w", pkg, version, errdefs.ErrNotFound)
}

// Fetch makes sure cacheDir holds pkg at version and returns its path and
// index record. A .deb already in cacheDir under the archive's file name is
// reused; otherwise it is downloaded with `apt-get download` into a scratch
// directory inside cacheDir and moved into place (under the archive's file
// name, without apt-get's escaped epoch) once verified. Either way
// the file's SHA-256 must equal apt's; on mismatch Fetch returns an error
// wrapping errdefs.ErrDataLoss naming both hashes and the file to delete.
func Fetch(ctx context.Context, cacheDir, pkg, version string) (string, *Info, error) {
	info, err := Show(ctx, pkg, version)
	if err != nil {
		return "", nil, err
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", nil, fmt.Errorf("create cache dir: %w", err)
	}
	deb := filepath.Join(cacheDir, filepath.Base(info.Filename))
	if _, err := os.Stat(deb); err == nil {
		if err := verify(deb, info.SHA256); err != nil {
			return "", nil, fmt.Errorf("check cached %s: %w: delete it and rerun to download it again", deb, err)
		}
		return deb, info, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", nil, fmt.Errorf("stat cached package: %w", err)
	}

	scratch, err := os.MkdirTemp(cacheDir, ".download-")
	if err != nil {
		return "", nil, fmt.Errorf("create download dir: %w", err)
	}
	defer os.RemoveAll(scratch)
	// Running as root, apt drops to the _apt user, which cannot write to
	// arbitrary directories; download as the calling user instead.
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg+"="+version)
	cmd.Dir = scratch
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("download %s=%s with apt-get: %w: %s", pkg, version, err, strings.TrimSpace(string(out)))
	}
	// apt-get names the file after the version with the epoch escaped
	// ("busybox-static_1%3a1.35.0-…"), unlike the archive's Filename.
	debs, err := filepath.Glob(filepath.Join(scratch, "*.deb"))
	if err != nil || len(debs) != 1 {
		return "", nil, fmt.Errorf("apt-get download of %s=%s left %d .deb files (%v), want 1", pkg, version, len(debs), debs)
	}
	got := debs[0]
	if err := verify(got, info.SHA256); err != nil {
		return "", nil, fmt.Errorf("check downloaded %s=%s: %w", pkg, version, err)
	}
	if err := os.Rename(got, deb); err != nil {
		return "", nil, fmt.Errorf("move package into cache: %w", err)
	}
	return deb, info, nil
}

// verify compares the SHA-256 of the file at p with want (hex).
func verify(p, want string) error {
	got, err := FileSHA256(p)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("SHA-256 is %s, apt's index says %s: %w", got, want, errdefs.ErrDataLoss)
	}
	return nil
}

// FileSHA256 returns the lower-case hex SHA-256 (64 characters) of the file
// at p.
func FileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("hash file: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Extract unpacks the data archive of the .deb at deb into dir (created if
// missing) with `dpkg-deb -x`. It returns an error with dpkg-deb's output when
// unpacking fails.
func Extract(ctx context.Context, deb, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create extract dir: %w", err)
	}
	out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("unpack %s with dpkg-deb: %w: %s", deb, err, strings.TrimSpace(string(out)))
	}
	return nil
}
