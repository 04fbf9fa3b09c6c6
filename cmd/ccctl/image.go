package main

import (
	"fmt"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/platforms"
	"github.com/urfave/cli/v2"

	"github.com/cofferhq/coffer/snapshot/pull"
)

// connectTimeout bounds the wait for containerd's socket.
const connectTimeout = 10 * time.Second

// imageCommand returns `ccctl image`, the image commands.
func imageCommand() *cli.Command {
	return &cli.Command{
		Name:  "image",
		Usage: "pull, encrypt and sign images for confidential containers",
		Subcommands: []*cli.Command{
			imagePullCommand(),
			imageEncryptCommand(),
			imageSignCommand(),
		},
	}
}

func imagePullCommand() *cli.Command {
	return &cli.Command{
		Name:      "pull",
		Usage:     "pull an image into cc-snapshotter: the host fetches only index, manifest and config, never a layer",
		ArgsUsage: "REF",
		Description: "Pulls REF through containerd with the image labels cc-snapshotter needs\n" +
			"(pkg/snapshotters.AppendInfoHandlerWrapper), so each layer is recorded by digest and\n" +
			"neither fetched nor unpacked on the host; the guest pulls the layers when a container\n" +
			"starts. Works whatever containerd's transfer service configuration is. REF is\n" +
			"normalized like docker does (busybox = docker.io/library/busybox:latest).\n" +
			"Prints the image and manifest digests and how many layer blobs are on the host.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "address", Aliases: []string{"a"}, Value: "/run/containerd/containerd.sock", EnvVars: []string{"CONTAINERD_ADDRESS"}, Usage: "containerd gRPC `SOCKET`"},
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Value: namespaces.Default, EnvVars: []string{"CONTAINERD_NAMESPACE"}, Usage: "containerd `NAMESPACE`"},
			&cli.StringFlag{Name: "snapshotter", Value: pull.DefaultSnapshotter, Usage: "`NAME` of cc-snapshotter's [proxy_plugins] entry"},
			&cli.BoolFlag{Name: "plain-http", Usage: "talk plain HTTP to the registry"},
			&cli.StringFlag{Name: "platform", Value: platforms.DefaultString(), Usage: "`PLATFORM` of the image to pull"},
			&cli.StringFlag{Name: "hosts-dir", Value: "/etc/containerd/certs.d", Usage: "registry hosts.toml `DIR` (containerd's certs.d layout)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("image pull: want exactly one image reference, got %d arguments", c.NArg())
			}
			client, err := containerd.New(c.String("address"),
				containerd.WithDefaultNamespace(c.String("namespace")),
				containerd.WithTimeout(connectTimeout))
			if err != nil {
				return fmt.Errorf("image pull: connect to containerd at %s: %w", c.String("address"), err)
			}
			defer client.Close()
			ctx := namespaces.WithNamespace(c.Context, c.String("namespace"))
			res, err := pull.Pull(ctx, client, c.Args().First(), pull.Options{
				Snapshotter: c.String("snapshotter"),
				Platform:    c.String("platform"),
				PlainHTTP:   c.Bool("plain-http"),
				HostsDir:    c.String("hosts-dir"),
			})
			if err != nil {
				return err
			}
			fmt.Fprint(c.App.Writer, res)
			return nil
		},
	}
}
