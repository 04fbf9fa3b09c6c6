package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/cofferhq/coffer/guest/build"
)

// guestCommand returns `ccctl guest`, the guest image commands.
func guestCommand() *cli.Command {
	return &cli.Command{
		Name:  "guest",
		Usage: "build and inspect the guest (kernel + initramfs) the shim boots",
		Subcommands: []*cli.Command{
			guestBuildCommand(),
		},
	}
}

func guestBuildCommand() *cli.Command {
	return &cli.Command{
		Name:  "build",
		Usage: "build vmlinuz, initrd.img and manifest.json from a pinned Debian kernel, runc and cc-agent",
		Description: "Downloads the pinned kernel package with apt-get (verified against apt's SHA-256),\n" +
			"resolves kernel module dependencies, copies runc with its shared libraries and the\n" +
			"static cc-agent as /init into a reproducible gzip initramfs. Building twice from the\n" +
			"same inputs gives identical bytes.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Value: "build/guest", Usage: "output `DIR` for vmlinuz, initrd.img, manifest.json"},
			&cli.StringFlag{Name: "cache", Value: "build/cache", Usage: "cache `DIR` for the kernel .deb"},
			&cli.StringFlag{Name: "agent", Required: true, Usage: "static cc-agent `BINARY` (becomes /init)"},
			&cli.StringFlag{Name: "runc", Value: build.DefaultRuncBinary, Usage: "runc `BINARY` to copy with its libraries"},
			&cli.StringFlag{Name: "kernel-package", Value: build.DefaultKernelPackage, Usage: "Debian kernel `PACKAGE`"},
			&cli.StringFlag{Name: "kernel-version", Value: build.DefaultKernelVersion, Usage: "Debian `VERSION` of the kernel package"},
			&cli.StringSliceFlag{Name: "module", Usage: "kernel `MODULE` to load at boot (repeatable; replaces the default list: " + strings.Join(build.DefaultModules(), ",") + ")"},
			&cli.StringFlag{Name: "cmdline", Value: build.DefaultCmdline, Usage: "kernel command `LINE` recorded in the manifest"},
			&cli.Int64Flag{Name: "source-date-epoch", EnvVars: []string{"SOURCE_DATE_EPOCH"}, Usage: "mtime of initramfs entries, `SECONDS` since the epoch"},
		},
		Action: func(c *cli.Context) error {
			m, err := build.Build(c.Context, build.Options{
				OutDir:          c.String("out"),
				CacheDir:        c.String("cache"),
				AgentBinary:     c.String("agent"),
				RuncBinary:      c.String("runc"),
				KernelPackage:   c.String("kernel-package"),
				KernelVersion:   c.String("kernel-version"),
				Modules:         c.StringSlice("module"),
				Cmdline:         c.String("cmdline"),
				SourceDateEpoch: c.Int64("source-date-epoch"),
			})
			if err != nil {
				return err
			}
			printManifest(c.App.Writer, m)
			return nil
		},
	}
}

// printManifest writes a short human summary of m.
func printManifest(w io.Writer, m *build.Manifest) {
	fmt.Fprintf(w, "guest built in %s\n", m.Dir)
	fmt.Fprintf(w, "  kernel   %s  %s (%d bytes; %s %s %s)\n", filepath.Join(m.Dir, m.Kernel.Path), m.Kernel.SHA256, m.Kernel.Size, m.KernelPackage, m.KernelPackageVersion, m.KernelVersion)
	fmt.Fprintf(w, "  initrd   %s  %s (%d bytes)\n", filepath.Join(m.Dir, m.Initrd.Path), m.Initrd.SHA256, m.Initrd.Size)
	fmt.Fprintf(w, "  cmdline  %s\n", m.Cmdline)
	fmt.Fprintf(w, "  agent    sha256 %s\n", m.AgentSHA256)
	fmt.Fprintf(w, "  runc     %s\n", m.RuncVersion)
	fmt.Fprintf(w, "  modules  %s\n", strings.Join(m.Modules, " "))
}
