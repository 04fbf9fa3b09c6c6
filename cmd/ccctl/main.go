// Command ccctl is Coffer's user and operator CLI.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func main() {
	app := &cli.App{
		Name:  "ccctl",
		Usage: "Coffer confidential containers: build guests, inspect and operate",
		Commands: []*cli.Command{
			guestCommand(),
			imageCommand(),
			attestCommand(),
			kbsCommand(),
			eventsCommand(),
			measureCommand(),
			policyCommand(),
			secretCommand(),
		},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "ccctl:", err)
		os.Exit(1)
	}
}
