package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/cofferhq/coffer/attestation"
	"github.com/cofferhq/coffer/initdata"
	"github.com/cofferhq/coffer/kbs/admin"
	"github.com/cofferhq/coffer/kbs/adminclient"
	"github.com/cofferhq/coffer/kbs/protocol"
	"github.com/cofferhq/coffer/kbs/refvalues"
)

// kbsCommand returns `ccctl kbs`, the cc-kbs admin commands. Every call
// but keygen-admin signs a 5-minute Ed25519 admin JWT with --admin-key.
func kbsCommand() *cli.Command {
	return &cli.Command{
		Name:  "kbs",
		Usage: "administer a cc-kbs key broker: resources, policies, reference values",
		Description: "Talks to cc-kbs's admin API. The server is authenticated by --cert-sha256\n" +
			"(the fingerprint cc-kbs prints at start) or --cacert; requests are authenticated\n" +
			"by a short-lived JWT signed with --admin-key (from `ccctl kbs keygen-admin`).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "url", Value: "https://localhost:8080", EnvVars: []string{"CC_KBS_URL"}, Usage: "cc-kbs base `URL`"},
			&cli.StringFlag{Name: "admin-key", EnvVars: []string{"CC_KBS_ADMIN_KEY"}, Usage: "Ed25519 admin private key `FILE` (PKCS #8 PEM)"},
			&cli.StringFlag{Name: "cert-sha256", EnvVars: []string{"CC_KBS_CERT_SHA256"}, Usage: "pin the server certificate by its SHA-256 `HEX`"},
			&cli.StringFlag{Name: "cacert", EnvVars: []string{"CC_KBS_CACERT"}, Usage: "trust the CA certificates in `FILE` instead of the system roots"},
			&cli.StringFlag{Name: "subject", Value: kbsDefaultSubject(), Usage: "admin `NAME` recorded in the KBS audit log"},
		},
		Subcommands: []*cli.Command{
			kbsKeygenCommand(),
			kbsResourceCommand(),
			kbsPolicyCommand(),
			kbsReferenceValuesCommand(),
			{
				Name:  "audit",
				Usage: "print the admin audit log as JSON",
				Flags: []cli.Flag{&cli.IntFlag{Name: "limit", Value: 50, Usage: "last `N` entries (0: all)"}},
				Action: kbsShow(func(c *cli.Context, ac *adminclient.Client) (any, error) {
					return ac.Audit(c.Context, c.Int("limit"))
				}),
			},
		},
	}
}

func kbsDefaultSubject() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "admin"
}

// kbsAdminClient builds the admin client from the parent flags.
func kbsAdminClient(c *cli.Context) (*adminclient.Client, error) {
	keyPath := c.String("admin-key")
	if keyPath == "" {
		return nil, errors.New("--admin-key is required: the Ed25519 private key from `ccctl kbs keygen-admin`")
	}
	key, err := admin.LoadPrivateKey(keyPath)
	if err != nil {
		return nil, err
	}
	url := c.String("url")
	if strings.HasPrefix(url, "http://") {
		fmt.Fprintln(c.App.ErrWriter, "ccctl: warning: plain HTTP: the KBS is not authenticated")
	}
	hc, err := adminclient.NewHTTPClient(adminclient.HTTPClientOptions{PinSHA256: c.String("cert-sha256"), CACert: c.String("cacert")})
	if err != nil {
		return nil, err
	}
	return adminclient.New(url, key, adminclient.Options{HTTPClient: hc, Subject: c.String("subject")}), nil
}

// kbsWithClient builds the admin client from the parent flags and runs
// fn with it. Subcommands check their own arguments first, so a usage
// error is reported before a missing --admin-key.
func kbsWithClient(c *cli.Context, fn func(*adminclient.Client) error) error {
	ac, err := kbsAdminClient(c)
	if err != nil {
		return err
	}
	return fn(ac)
}

// kbsShow returns an action that prints as JSON what get returns.
func kbsShow(get func(*cli.Context, *adminclient.Client) (any, error)) cli.ActionFunc {
	return func(c *cli.Context) error {
		return kbsWithClient(c, func(ac *adminclient.Client) error {
			v, err := get(c, ac)
			if err != nil {
				return err
			}
			return kbsPrintJSON(c.App.Writer, v)
		})
	}
}

func kbsPrintJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// kbsReadInput reads path, or stdin for "-".
func kbsReadInput(c *cli.Context, path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(io.LimitReader(c.App.Reader, 64<<20))
	}
	return os.ReadFile(path)
}

func kbsKeygenCommand() *cli.Command {
	return &cli.Command{
		Name:  "keygen-admin",
		Usage: "generate the Ed25519 admin key pair (PKCS #8 / PKIX PEM)",
		Description: "Writes the private key (mode 0600; keep it with the operator) and the public key\n" +
			"(give it to cc-kbs as [admin] public_key). Refuses to overwrite existing files.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "private", Value: "kbs-admin.key", Usage: "private key output `FILE`"},
			&cli.StringFlag{Name: "public", Value: "kbs-admin.pub", Usage: "public key output `FILE`"},
		},
		Action: func(c *cli.Context) error {
			priv, pub, err := admin.GenerateKey()
			if err != nil {
				return err
			}
			if err := kbsWriteNew(c.String("private"), priv, 0o600); err != nil {
				return err
			}
			if err := kbsWriteNew(c.String("public"), pub, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "admin private key: %s\nadmin public key:  %s (set [admin] public_key to it)\n", c.String("private"), c.String("public"))
			return nil
		},
	}
}

// kbsWriteNew creates path exclusively with mode.
func kbsWriteNew(path string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("write %s: file exists; remove it or choose another path", path)
		}
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func kbsResourceCommand() *cli.Command {
	return &cli.Command{
		Name:  "resource",
		Usage: "set, get and list resources (secrets released to attested guests)",
		Subcommands: []*cli.Command{
			{
				Name:      "set",
				Usage:     "store a resource value",
				ArgsUsage: "REPOSITORY/TYPE/TAG",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "file", Usage: "read the value from `FILE` (- for stdin)"},
					&cli.StringFlag{Name: "value", Usage: "the value as a `STRING`"},
				},
				Action: func(c *cli.Context) error {
					path, err := kbsOneArg(c, "REPOSITORY/TYPE/TAG")
					if err != nil {
						return err
					}
					var value []byte
					switch {
					case c.IsSet("file") && c.IsSet("value"):
						return errors.New("give --file or --value, not both")
					case c.IsSet("file"):
						if value, err = kbsReadInput(c, c.String("file")); err != nil {
							return err
						}
					case c.IsSet("value"):
						value = []byte(c.String("value"))
					default:
						return errors.New("give the value with --file FILE or --value STRING")
					}
					return kbsShow(func(c *cli.Context, ac *adminclient.Client) (any, error) {
						return ac.SetResource(c.Context, path, value)
					})(c)
				},
			},
			{
				Name:      "get",
				Usage:     "print a resource value (admin read-back)",
				ArgsUsage: "REPOSITORY/TYPE/TAG",
				Flags:     []cli.Flag{&cli.StringFlag{Name: "out", Usage: "write the value to `FILE` (mode 0600) instead of stdout"}},
				Action: func(c *cli.Context) error {
					path, err := kbsOneArg(c, "REPOSITORY/TYPE/TAG")
					if err != nil {
						return err
					}
					return kbsWithClient(c, func(ac *adminclient.Client) error {
						v, err := ac.GetResource(c.Context, path)
						if err != nil {
							return err
						}
						if out := c.String("out"); out != "" {
							return kbsWriteNew(out, v, 0o600)
						}
						_, err = c.App.Writer.Write(v)
						return err
					})
				},
			},
			{
				Name:  "list",
				Usage: "list resources (metadata only) as JSON",
				Action: kbsShow(func(c *cli.Context, ac *adminclient.Client) (any, error) {
					return ac.ListResources(c.Context)
				}),
			},
		},
	}
}

func kbsPolicyKind(c *cli.Context) (string, error) {
	switch k := c.String("kind"); k {
	case "attestation":
		return adminclient.KindAttestationPolicy, nil
	case "resource":
		return adminclient.KindResourcePolicy, nil
	default:
		return "", fmt.Errorf("--kind %q: want attestation or resource", k)
	}
}

func kbsPolicyCommand() *cli.Command {
	kindFlag := &cli.StringFlag{Name: "kind", Required: true, Usage: "policy layer: attestation or resource"}
	return &cli.Command{
		Name:  "policy",
		Usage: "set and inspect the attestation and resource policies (Rego v1, package policy)",
		Subcommands: []*cli.Command{
			{
				Name:      "set",
				Usage:     "upload a policy; the KBS compiles it before it becomes the next version",
				ArgsUsage: "FILE.rego (- for stdin)",
				Flags:     []cli.Flag{kindFlag},
				Action: func(c *cli.Context) error {
					kind, err := kbsPolicyKind(c)
					if err != nil {
						return err
					}
					file, err := kbsOneArg(c, "FILE.rego")
					if err != nil {
						return err
					}
					src, err := kbsReadInput(c, file)
					if err != nil {
						return err
					}
					return kbsWithClient(c, func(ac *adminclient.Client) error {
						v, err := ac.SetPolicy(c.Context, kind, src)
						if err != nil {
							return err
						}
						_, err = fmt.Fprintf(c.App.Writer, "%s (set %s by %s)\n", v.ID, v.Time.Format("2006-01-02T15:04:05Z"), v.Actor)
						return err
					})
				},
			},
			{
				Name:  "get",
				Usage: "print the current policy source",
				Flags: []cli.Flag{kindFlag},
				Action: func(c *cli.Context) error {
					kind, err := kbsPolicyKind(c)
					if err != nil {
						return err
					}
					return kbsWithClient(c, func(ac *adminclient.Client) error {
						v, err := ac.Policy(c.Context, kind)
						if err != nil {
							return err
						}
						fmt.Fprintf(c.App.ErrWriter, "# %s\n", v.ID)
						_, err = io.WriteString(c.App.Writer, v.Content)
						return err
					})
				},
			},
			{
				Name:  "history",
				Usage: "print every version of a policy as JSON",
				Flags: []cli.Flag{kindFlag},
				Action: func(c *cli.Context) error {
					kind, err := kbsPolicyKind(c)
					if err != nil {
						return err
					}
					return kbsShow(func(c *cli.Context, ac *adminclient.Client) (any, error) {
						return ac.History(c.Context, kind)
					})(c)
				},
			},
		},
	}
}

func kbsReferenceValuesCommand() *cli.Command {
	return &cli.Command{
		Name:  "reference-values",
		Usage: "manage the trusted launch measurements, init-data digests and TCB floors",
		Subcommands: []*cli.Command{
			{
				Name:  "add",
				Usage: "trust one launch measurement or init-data document",
				Description: "One of:\n" +
					"  --tee T --measurement HEX        a launch measurement (SNP MEASUREMENT / TDX MRTD)\n" +
					"  --tee T --init-data FILE         the init-data TOML document FILE (- for stdin): its digest\n" +
					"                                   is computed exactly as the guest and cc-kbs compute it\n" +
					"  --tee T --init-data-digest HEX   an init-data digest (sha256/384/512 of the document)\n" +
					"  --from-json FILE                 {\"tee\", \"measurement\"} (what `ccctl measure --json` prints)\n" +
					"                                   or {\"tee\", \"init_data\"}\n" +
					"Once a TEE has init-data digests, the default attestation policy admits only\n" +
					"guests launched with one of those documents.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "tee", Usage: "`TEE`: snp, tdx or sim"},
					&cli.StringFlag{Name: "measurement", Usage: "launch measurement (SNP MEASUREMENT / TDX MRTD), 96 `HEX` characters"},
					&cli.StringFlag{Name: "init-data", Usage: "trust the init-data TOML document in `FILE` (- for stdin)"},
					&cli.StringFlag{Name: "init-data-digest", Usage: "trust the init-data document with this digest, 64, 96 or 128 `HEX` characters"},
					&cli.StringFlag{Name: "from-json", Usage: "read {\"tee\",\"measurement\"} or {\"tee\",\"init_data\"} from `FILE` (- for stdin)"},
				},
				Action: func(c *cli.Context) error {
					e, err := kbsReferenceEntry(c)
					if err != nil {
						return err
					}
					if err := e.Check(); err != nil {
						return err
					}
					return kbsWithClient(c, func(ac *adminclient.Client) error {
						v, err := ac.AddReferenceValue(c.Context, e)
						if err != nil {
							return err
						}
						tv := v.Values.For(kbsTEE(e.TEE))
						if e.InitData != "" {
							d, _ := refvalues.NormalizeInitDataDigest(e.InitData)
							_, err = fmt.Fprintf(c.App.Writer, "%s: %s init_data %s (%d trusted)\n", v.ID, e.TEE, d, len(tv.InitData))
							return err
						}
						_, err = fmt.Fprintf(c.App.Writer, "%s: %s measurements %d\n", v.ID, e.TEE, len(tv.Measurements))
						return err
					})
				},
			},
			{
				Name:      "set",
				Usage:     "replace the whole reference-values document",
				ArgsUsage: "FILE.json (- for stdin)",
				Action: func(c *cli.Context) error {
					file, err := kbsOneArg(c, "FILE.json")
					if err != nil {
						return err
					}
					b, err := kbsReadInput(c, file)
					if err != nil {
						return err
					}
					if _, err := refvalues.Parse(b); err != nil {
						return err
					}
					return kbsWithClient(c, func(ac *adminclient.Client) error {
						v, err := ac.SetReferenceValues(c.Context, b)
						if err != nil {
							return err
						}
						_, err = fmt.Fprintln(c.App.Writer, v.ID)
						return err
					})
				},
			},
			{
				Name:  "get",
				Usage: "print the current reference values as JSON",
				Action: kbsShow(func(c *cli.Context, ac *adminclient.Client) (any, error) {
					return ac.ReferenceValues(c.Context)
				}),
			},
		},
	}
}

// kbsReferenceEntry builds the entry `reference-values add` sends from
// exactly one of --from-json, --measurement, --init-data and
// --init-data-digest (the last three with --tee).
func kbsReferenceEntry(c *cli.Context) (refvalues.Entry, error) {
	var set []string
	for _, f := range []string{"from-json", "measurement", "init-data", "init-data-digest"} {
		if c.IsSet(f) {
			set = append(set, "--"+f)
		}
	}
	if len(set) != 1 {
		return refvalues.Entry{}, fmt.Errorf("give exactly one of --measurement, --init-data, --init-data-digest (each with --tee) or --from-json, got %d (%s)", len(set), strings.Join(set, ", "))
	}
	if c.IsSet("from-json") {
		if c.IsSet("tee") {
			return refvalues.Entry{}, errors.New("give --from-json or --tee with a value, not both: the JSON names the tee")
		}
		var e refvalues.Entry
		b, err := kbsReadInput(c, c.String("from-json"))
		if err != nil {
			return e, err
		}
		if err := json.Unmarshal(b, &e); err != nil {
			return e, fmt.Errorf("parse %s: want {\"tee\": ..., \"measurement\": ...} or {\"tee\": ..., \"init_data\": ...}: %w", c.String("from-json"), err)
		}
		return e, nil
	}
	if !c.IsSet("tee") {
		return refvalues.Entry{}, fmt.Errorf("%s needs --tee snp, tdx or sim", set[0])
	}
	e := refvalues.Entry{TEE: c.String("tee")}
	switch {
	case c.IsSet("measurement"):
		e.Measurement = c.String("measurement")
	case c.IsSet("init-data-digest"):
		e.InitData = c.String("init-data-digest")
	default:
		file := c.String("init-data")
		b, err := kbsReadInput(c, file)
		if err != nil {
			return e, fmt.Errorf("read init-data: %w", err)
		}
		doc, err := initdata.Parse(b)
		if err != nil {
			return e, fmt.Errorf("%s: %w", file, err)
		}
		e.InitData = hex.EncodeToString(doc.Digest())
	}
	return e, nil
}

func kbsTEE(s string) attestation.TEE {
	t, _ := protocol.ParseTEE(s)
	return t
}

func kbsOneArg(c *cli.Context, name string) (string, error) {
	if c.NArg() != 1 {
		for _, a := range c.Args().Slice()[1:] {
			if strings.HasPrefix(a, "-") {
				return "", fmt.Errorf("want exactly one argument %s, got %d: put flags such as %s before %s", name, c.NArg(), a, name)
			}
		}
		return "", fmt.Errorf("want exactly one argument %s, got %d", name, c.NArg())
	}
	return c.Args().First(), nil
}
