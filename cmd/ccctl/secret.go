package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/cofferhq/coffer/guest/cdh"
	"github.com/cofferhq/coffer/guest/cdh/sealed"
)

// secretCommand returns `ccctl secret`, the sealed-secret commands.
func secretCommand() *cli.Command {
	return &cli.Command{
		Name:  "secret",
		Usage: "make CoCo sealed secrets for confidential containers",
		Subcommands: []*cli.Command{
			secretSealCommand(),
		},
	}
}

func secretSealCommand() *cli.Command {
	return &cli.Command{
		Name:  "seal",
		Usage: "print a sealed secret that the guest unseals to the value of a KBS resource",
		Description: "Prints sealed.<header>.<payload>.<signature> (CoCo's format, vault type, provider\n" +
			"kbs) pointing at --resource. Put it in a container environment variable\n" +
			"(NAME=sealed.…): the guest verifies it and replaces it by the resource's value, fetched\n" +
			"from cc-kbs after attestation. The value itself never appears in the sealed string.\n" +
			"It is signed (JWS ES256) with --key, an ECDSA P-256 key; the guest verifies it with\n" +
			"the public JWK stored in cc-kbs at --kid. `ccctl secret seal --generate-key FILE\n" +
			"--kid URI` writes a key pair: FILE (PKCS #8 PEM, mode 0600) and FILE.jwk, the public\n" +
			"JWK to store at the kid (ccctl kbs resource set REPO/TYPE/TAG --file FILE.jwk).\n" +
			"--unsigned makes a secret only guests that skip verification accept.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "resource", Usage: "the secret's KBS resource `URI`, kbs:///REPO/TYPE/TAG"},
			&cli.StringFlag{Name: "key", Usage: "ECDSA P-256 signing key `FILE` (unencrypted PKCS #8 PEM)"},
			&cli.StringFlag{Name: "kid", Usage: "KBS resource `URI` of the verification JWK, kbs:///REPO/TYPE/TAG"},
			&cli.BoolFlag{Name: "unsigned", Usage: "do not sign (accepted only by guests that skip verification)"},
			&cli.StringFlag{Name: "generate-key", Usage: "write a new key pair to `FILE` and FILE.jwk (needs --kid), and exit"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return fmt.Errorf("secret seal: takes no arguments, got %d: use --resource URI", c.NArg())
			}
			if path := c.String("generate-key"); path != "" {
				return generateSealingKey(c.App.Writer, path, c.String("kid"))
			}
			s, err := sealSecret(sealRequest{
				Resource: c.String("resource"),
				KeyPath:  c.String("key"),
				Kid:      c.String("kid"),
				Unsigned: c.Bool("unsigned"),
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, s)
			return nil
		},
	}
}

// sealRequest holds the parsed flags of `ccctl secret seal`.
type sealRequest struct {
	Resource string // kbs:///repo/type/tag of the value
	KeyPath  string // PKCS #8 PEM ECDSA P-256 signing key
	Kid      string // kbs:///repo/type/tag of the public JWK
	Unsigned bool   // no signature
}

// sealSecret returns the sealed string for req.
func sealSecret(req sealRequest) (string, error) {
	if req.Resource == "" {
		return "", errors.New("secret seal: --resource kbs:///REPO/TYPE/TAG is required")
	}
	sec, err := sealed.NewVaultSecret(req.Resource)
	if err != nil {
		return "", fmt.Errorf("secret seal: --resource: %w", err)
	}
	if req.Unsigned {
		if req.KeyPath != "" || req.Kid != "" {
			return "", errors.New("secret seal: --unsigned takes no --key or --kid")
		}
		return sealed.SealUnsigned(sec)
	}
	if req.KeyPath == "" || req.Kid == "" {
		return "", errors.New("secret seal: --key FILE and --kid kbs:///REPO/TYPE/TAG are required (or --unsigned); create a key with --generate-key FILE --kid URI")
	}
	key, err := loadSigningKey(req.KeyPath)
	if err != nil {
		return "", err
	}
	return sealed.Seal(sec, key, req.Kid)
}

// generateSealingKey writes a new ECDSA P-256 key to path (PKCS #8 PEM,
// 0600) and its public JWK with kid to path.jwk, refusing to overwrite.
func generateSealingKey(w io.Writer, path, kid string) error {
	if kid == "" {
		return errors.New("secret seal --generate-key: --kid kbs:///REPO/TYPE/TAG is required: the JWK names where it will be stored")
	}
	if _, err := cdh.ParseResourceURI(kid); err != nil {
		return fmt.Errorf("secret seal --generate-key: --kid: %w", err)
	}
	k, priv, err := newP256Key()
	if err != nil {
		return err
	}
	jwk, err := sealed.PublicJWK(k, kid)
	if err != nil {
		return fmt.Errorf("encode public JWK: %w", err)
	}
	if err := kbsWriteNew(path, priv, 0o600); err != nil {
		return err
	}
	if err := kbsWriteNew(path+".jwk", jwk, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(w, "private key: %s (keep it secret)\npublic JWK:  %s (store it in cc-kbs at %s)\n", path, path+".jwk", kid)
	return nil
}
