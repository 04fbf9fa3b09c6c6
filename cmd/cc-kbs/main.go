// Command cc-kbs is Coffer's key broker: it verifies TEE evidence (SNP,
// TDX, and the sim TEE when configured) over Trustee's KBS protocol v0.4.0
// and releases resources encrypted to the attested guest's key. See
// docs/kbs.md and configs/kbs/cc-kbs.toml.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	kbsconfig "github.com/cofferhq/coffer/configs/kbs"
	"github.com/cofferhq/coffer/kbs/config"
	"github.com/cofferhq/coffer/kbs/daemon"
)

func main() {
	if err := newApp().RunContext(context.Background(), os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "cc-kbs:", err)
		os.Exit(1)
	}
}

// newApp returns the cc-kbs command line application.
func newApp() *cli.App {
	return &cli.App{
		Name:  "cc-kbs",
		Usage: "Coffer key broker service (Trustee KBS protocol v0.4.0)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, EnvVars: []string{"CC_KBS_CONFIG"}, Usage: "TOML configuration `FILE` (default: built-in defaults)"},
			&cli.StringFlag{Name: "listen", Usage: "override listen `ADDR` (host:port)"},
			&cli.StringFlag{Name: "data-dir", Usage: "override data_dir `DIR`"},
			&cli.BoolFlag{Name: "insecure-http", Usage: "serve plain HTTP instead of HTTPS (development only: the KBS is not authenticated)"},
			&cli.BoolFlag{Name: "print-default-config", Usage: "print the documented default configuration and exit"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("unexpected argument %q: cc-kbs takes flags only (e.g. --config FILE); see cc-kbs --help", c.Args().First())
			}
			if c.Bool("print-default-config") {
				_, err := fmt.Fprint(c.App.Writer, kbsconfig.ExampleConfig)
				return err
			}
			cfg, err := config.Load(c.String("config"))
			if err != nil {
				return err
			}
			if v := c.String("listen"); v != "" {
				cfg.Listen = v
			}
			if v := c.String("data-dir"); v != "" {
				cfg.DataDir = v
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			cfg.Runtime.Apply()
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			return daemon.Run(ctx, daemon.Options{Config: cfg, InsecureHTTP: c.Bool("insecure-http")})
		},
	}
}
