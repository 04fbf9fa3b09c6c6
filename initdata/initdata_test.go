package initdata

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const doc = `version = "0.1.0"
algorithm = "sha384"
[data]
"aa.toml" = '''
[token_configs.kbs]
url = "https://127.0.0.1:8080"
cert = """-----BEGIN CERTIFICATE-----
MIIB
-----END CERTIFICATE-----"""
'''
"cdh.toml" = '''
[kbc]
name = "cc_kbc"
url = "https://10.0.2.100:8080"
kbs_cert = "cdh-cert"
[image]
image_security_policy_uri = "kbs:///default/security-policy/test"
'''
"policy.rego" = '''package agent_policy
default AllowRequestsFailingPolicy := false
'''
`

func TestParse(t *testing.T) {
	d, err := Parse([]byte(doc))
	require.NoError(t, err)
	require.Equal(t, "0.1.0", d.Version)
	require.Equal(t, SHA384, d.Algorithm)
	require.Equal(t, []byte(doc), d.Raw)
	want := sha512.Sum384([]byte(doc))
	require.Equal(t, want[:], d.Digest())
	require.Equal(t, want[:32], Fit(d.Digest(), SizeHostData))
	require.Equal(t, want[:], Fit(d.Digest(), SizeMRConfigID))

	kbs, err := d.KBS()
	require.NoError(t, err)
	require.Equal(t, "https://127.0.0.1:8080", kbs.URL, "aa.toml wins over cdh.toml")
	require.Equal(t, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", kbs.CertPEM)
	require.Equal(t, "kbs:///default/security-policy/test", d.ImageSecurityPolicyURI())
	require.True(t, strings.HasPrefix(d.AgentPolicy(), "package agent_policy\n"))
}

func TestParseFallbacksAndAbsence(t *testing.T) {
	d, err := Parse([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\nurl = \"https://kbs:1\"\nkbs_cert = \"C\"\n'''\n"))
	require.NoError(t, err)
	kbs, err := d.KBS()
	require.NoError(t, err)
	require.Equal(t, &KBSConfig{URL: "https://kbs:1", CertPEM: "C"}, kbs)
	sum := sha256.Sum256(d.Raw)
	require.Equal(t, sum[:], d.Digest())

	d, err = Parse([]byte("version = \"0.1.0\"\nalgorithm = \"sha512\"\n"))
	require.NoError(t, err)
	kbs, err = d.KBS()
	require.NoError(t, err)
	require.Nil(t, kbs)
	require.Empty(t, d.ImageSecurityPolicyURI())
	require.Empty(t, d.AgentPolicy())
	require.Len(t, d.Digest(), 64)
	require.Equal(t, d.Digest()[:48], Fit(d.Digest(), SizeMRConfigID), "truncates")
}

func TestFitPads(t *testing.T) {
	require.Equal(t, append([]byte{1, 2}, make([]byte, 30)...), Fit([]byte{1, 2}, 32))
	require.Equal(t, make([]byte, 32), Fit(nil, 32))
}

func TestParseRejects(t *testing.T) {
	for name, tc := range map[string]struct{ in, msg string }{
		"no version":      {"algorithm = \"sha256\"\n", `no "version"`},
		"bad version":     {"version = \"0.2.0\"\nalgorithm = \"sha256\"\n", `version "0.2.0" is not supported`},
		"no algorithm":    {"version = \"0.1.0\"\n", `no "algorithm"`},
		"bad algorithm":   {"version = \"0.1.0\"\nalgorithm = \"md5\"\n", `algorithm "md5" is not supported`},
		"bad toml":        {"version = ", "parse init-data TOML"},
		"unknown key":     {"version = \"0.1.0\"\nalgorithm = \"sha256\"\nextra = 1\n", `unknown keys ["extra"]`},
		"non-string data": {"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nx = 1\n", "parse init-data TOML"},
		"bad aa.toml":     {"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"aa.toml\" = \"[x\"\n", `data["aa.toml"]`},
		"aa no url":       {"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"aa.toml\" = \"[token_configs.kbs]\\ncert = \\\"x\\\"\\n\"\n", "has no url"},
		"bad cdh.toml":    {"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"cdh.toml\" = \"[x\"\n", `data["cdh.toml"]`},
		"too big":         {"version = \"0.1.0\"\n#" + strings.Repeat("x", MaxSize), "want at most"},
	} {
		_, err := Parse([]byte(tc.in))
		require.ErrorIs(t, err, ErrInvalid, name)
		require.ErrorContains(t, err, tc.msg, name)
	}
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write(b)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func TestDecodeAnnotation(t *testing.T) {
	got, err := DecodeAnnotation(base64.StdEncoding.EncodeToString([]byte(doc)))
	require.NoError(t, err)
	require.Equal(t, []byte(doc), got)

	got, err = DecodeAnnotation(" " + base64.StdEncoding.EncodeToString(gz(t, []byte(doc))) + "\n")
	require.NoError(t, err)
	require.Equal(t, []byte(doc), got)
	d, err := Parse(got)
	require.NoError(t, err)
	want := sha512.Sum384([]byte(doc))
	require.Equal(t, want[:], d.Digest(), "digest is over the gunzipped TOML")
}

func TestDecodeAnnotationRejects(t *testing.T) {
	_, err := DecodeAnnotation("not base64!")
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "standard padded base64")

	_, err = DecodeAnnotation(base64.StdEncoding.EncodeToString([]byte{0x1f, 0x8b, 0, 1, 2}))
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "gunzip")

	bomb := gz(t, make([]byte, MaxSize+1))
	_, err = DecodeAnnotation(base64.StdEncoding.EncodeToString(bomb))
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "exceeds")

	_, err = DecodeAnnotation(strings.Repeat("A", base64.StdEncoding.EncodedLen(MaxSize)+4))
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "want at most")
}
