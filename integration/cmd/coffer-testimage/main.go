// Command coffer-testimage builds Coffer's busybox test image (see
// harness.BusyboxImage: the host's static /bin/busybox in one OCI layer)
// and pushes it to a plain-HTTP registry, for `make demo` and `make bench`.
//
// Usage:
//
//	coffer-testimage --registry 127.0.0.1:5000 [--repo busybox:latest] [--timeout 1m]
//
// It waits until GET http://<registry>/v2/ answers 200 (within --timeout),
// pushes with go-containerregistry's remote.Write, and prints the pushed
// reference ("127.0.0.1:5000/busybox:latest") on stdout. Errors go to
// stderr with exit status 1.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	ggcrname "github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/cofferhq/coffer/integration/harness"
)

func main() {
	registry := flag.String("registry", "", "registry host:port, reached over plain HTTP (required)")
	repo := flag.String("repo", "busybox:latest", "repository and tag to push to")
	timeout := flag.Duration("timeout", time.Minute, "bound on waiting for the registry plus the push")
	flag.Parse()
	if *registry == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: coffer-testimage --registry HOST:PORT [--repo NAME:TAG] [--timeout DURATION]")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ref, err := push(ctx, *registry, *repo)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coffer-testimage:", err)
		os.Exit(1)
	}
	fmt.Println(ref)
}

// push waits for the registry, then builds and pushes the busybox image
// and returns its reference.
func push(ctx context.Context, registry, repo string) (string, error) {
	tag, err := ggcrname.NewTag(registry+"/"+repo, ggcrname.Insecure)
	if err != nil {
		return "", fmt.Errorf("parse image reference %q: %w: want HOST:PORT and NAME[:TAG]", registry+"/"+repo, err)
	}
	if err := waitRegistry(ctx, registry); err != nil {
		return "", err
	}
	img, err := harness.BusyboxImage()
	if err != nil {
		return "", fmt.Errorf("build busybox test image: %w", err)
	}
	if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("push %s: %w", tag, err)
	}
	return tag.Name(), nil
}

// waitRegistry polls GET http://<registry>/v2/ every 100 ms until it
// answers 200 or ctx ends; the error then carries the last failure.
func waitRegistry(ctx context.Context, registry string) error {
	url := "http://" + registry + "/v2/"
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("build request for %s: %w", url, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s, want 200 OK", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for registry %s: not ready before the deadline (%w); last attempt: %w: check that the registry is running", url, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
