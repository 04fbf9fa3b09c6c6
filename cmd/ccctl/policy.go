package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/cofferhq/coffer/guest/policy"
	"github.com/cofferhq/coffer/guest/policy/gen"
)

// policyCommand returns `ccctl policy`, the agent policy commands.
func policyCommand() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "write agent policies (the Rego that cc-agent enforces on host requests)",
		Subcommands: []*cli.Command{
			policyGenerateCommand(),
			{
				Name:  "default",
				Usage: "print the built-in default policy",
				Action: func(c *cli.Context) error {
					_, err := io.WriteString(c.App.Writer, policy.Default)
					return err
				},
			},
		},
	}
}

func policyGenerateCommand() *cli.Command {
	return &cli.Command{
		Name:      "generate",
		Usage:     "generate a policy pinning exactly one container (ctr run flags) or one pod (--pod FILE)",
		ArgsUsage: "[IMAGE@DIGEST ID [ARG...]]",
		Description: "Prints the default policy's rules with a policy_data that pins the image digest,\n" +
			"command, env, mounts and privileges of the container ctr run would create from the\n" +
			"same flags, or of every container of a Kubernetes Pod (--pod pod.yaml). Put the\n" +
			"output into the pod's init-data as data[\"policy.rego\"]. The image must be named\n" +
			"with its digest. See docs/policy.md.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "pod", Usage: "Kubernetes Pod YAML `FILE` (- for stdin)"},
			&cli.StringSliceFlag{Name: "env", Usage: "environment `K=V` (ctr run --env)"},
			&cli.StringSliceFlag{Name: "mount", Usage: "mount `type=T,src=S,dst=D,options=a:b` (ctr run --mount)"},
			&cli.BoolFlag{Name: "privileged", Usage: "run privileged (ctr run --privileged)"},
			&cli.StringSliceFlag{Name: "cap-add", Usage: "add `CAP` (ctr run --cap-add)"},
			&cli.StringSliceFlag{Name: "cap-drop", Usage: "drop `CAP` (ctr run --cap-drop)"},
			&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "numeric `UID[:GID]` (ctr run --user)"},
			&cli.BoolFlag{Name: "allow-new-privs", Usage: "ctr run --allow-new-privs"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write to `FILE` instead of stdout"},
		},
		Action: func(c *cli.Context) error {
			var cs []policy.Container
			if f := c.String("pod"); f != "" {
				if c.NArg() != 0 {
					return fmt.Errorf("policy generate: --pod takes no arguments, got %d", c.NArg())
				}
				doc, err := readFileOrStdin(f)
				if err != nil {
					return err
				}
				if cs, err = gen.FromPod(doc); err != nil {
					return fmt.Errorf("policy generate: %w", err)
				}
			} else {
				if c.NArg() < 2 {
					return fmt.Errorf("policy generate: want IMAGE@DIGEST ID [ARG...] as for ctr run, or --pod FILE")
				}
				ct, err := gen.FromRun(gen.RunOptions{
					Image:         c.Args().Get(0),
					ID:            c.Args().Get(1),
					Args:          c.Args().Slice()[2:],
					Env:           c.StringSlice("env"),
					Mounts:        c.StringSlice("mount"),
					Privileged:    c.Bool("privileged"),
					CapAdd:        c.StringSlice("cap-add"),
					CapDrop:       c.StringSlice("cap-drop"),
					User:          c.String("user"),
					AllowNewPrivs: c.Bool("allow-new-privs"),
				})
				if err != nil {
					return fmt.Errorf("policy generate: %w", err)
				}
				cs = []policy.Container{ct}
			}
			out, err := policy.Render(policy.Data{Containers: cs})
			if err != nil {
				return fmt.Errorf("policy generate: %w", err)
			}
			if _, err := policy.Load(out); err != nil { // never print a policy the agent would refuse
				return fmt.Errorf("policy generate: generated policy does not load: %w", err)
			}
			if f := c.String("output"); f != "" {
				if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
					return fmt.Errorf("policy generate: write %s: %w", f, err)
				}
				return nil
			}
			_, err = io.WriteString(c.App.Writer, out)
			return err
		},
	}
}

// readFileOrStdin reads f, or stdin for "-", up to 1 MiB.
func readFileOrStdin(f string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if f != "-" {
		fh, err := os.Open(f)
		if err != nil {
			return nil, fmt.Errorf("policy generate: %w", err)
		}
		defer fh.Close()
		r = fh
	}
	b, err := io.ReadAll(io.LimitReader(r, 1<<20+1))
	if err != nil {
		return nil, fmt.Errorf("policy generate: read %s: %w", f, err)
	}
	if len(b) > 1<<20 {
		return nil, fmt.Errorf("policy generate: %s exceeds 1 MiB: is it a Pod manifest?", f)
	}
	return b, nil
}
