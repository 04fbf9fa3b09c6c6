// Command cc-snapshotter is Coffer's containerd proxy snapshotter for guest
// pull: containerd records image layers in it without fetching or
// unpacking them, and containers get a mount telling the shim to pull the
// image inside the guest. See docs/snapshotter.md.
//
// Usage: cc-snapshotter [--config FILE] [--root DIR] [--address SOCKET] [--log-level LEVEL]
//
// Flags override the configuration file (default
// /etc/coffer/snapshotter.toml, optional). SIGTERM or SIGINT stop it
// gracefully.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"syscall"

	"github.com/cofferhq/coffer/snapshot/server"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "cc-snapshotter:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fl := flag.NewFlagSet("cc-snapshotter", flag.ContinueOnError)
	configPath := fl.String("config", server.DefaultConfigPath, "configuration `FILE` (TOML); optional when left at the default")
	root := fl.String("root", "", "metadata `DIR` (overrides root_path; default "+server.DefaultRootPath+")")
	address := fl.String("address", "", "unix `SOCKET` to serve on (overrides address; default "+server.DefaultAddress+")")
	level := fl.String("log-level", "", "log `LEVEL` (overrides log_level; default "+server.DefaultLogLevel+")")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: cc-snapshotter takes only flags", fl.Args())
	}
	explicit := false
	fl.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })

	cfg, err := server.LoadConfig(*configPath)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		cfg, err = server.DefaultConfig(), nil
	}
	if err != nil {
		return err
	}
	if *root != "" {
		cfg.RootPath = *root
	}
	if *address != "" {
		cfg.Address = *address
	}
	if *level != "" {
		cfg.LogLevel = *level
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return server.Run(ctx, cfg)
}
