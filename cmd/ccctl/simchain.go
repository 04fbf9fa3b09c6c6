package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/cofferhq/coffer/attestation/sim"
)

// simChainCommand is `ccctl attest sim-chain DIR`: a new test-only sim TEE
// chain for the shim (attestation.sim_chain_dir) and cc-kbs
// ([tee.sim] root_pem = DIR/root.pem).
func simChainCommand() *cli.Command {
	return &cli.Command{
		Name:      "sim-chain",
		Usage:     "create a test-only sim TEE signing chain (ARK → ASK → VCEK) in DIR",
		ArgsUsage: "DIR",
		Description: "Writes root.pem, ark.pem, ask.pem, vcek.pem and their private keys (mode 0600) to DIR.\n" +
			"Give DIR to the shim as attestation.sim_chain_dir and DIR/root.pem to cc-kbs as [tee.sim] root_pem.\n" +
			"Sim evidence proves nothing against a malicious host: it exists so the attested flow runs\n" +
			"on machines without SEV-SNP or TDX. A KBS accepts it only when its config names this root.",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "force", Usage: "overwrite an existing chain in DIR"}},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("attest sim-chain: want exactly one directory argument, got %d", c.NArg())
			}
			dir := c.Args().First()
			if _, err := os.Stat(filepath.Join(dir, sim.RootFile)); err == nil && !c.Bool("force") {
				return fmt.Errorf("attest sim-chain: %s already holds a chain (%s): pass --force to replace it (guests and KBSs trusting it stop verifying)", dir, sim.RootFile)
			}
			s, err := sim.Generate(sim.GenerateOptions{})
			if err != nil {
				return fmt.Errorf("attest sim-chain: %w", err)
			}
			if err := s.WriteDir(dir); err != nil {
				return fmt.Errorf("attest sim-chain: %w", err)
			}
			fmt.Fprintf(c.App.Writer, "sim chain written to %s\nshim:   [attestation] sim_chain_dir = %q\ncc-kbs: [tee.sim] root_pem = %q\n",
				dir, dir, filepath.Join(dir, sim.RootFile))
			return nil
		},
	}
}
