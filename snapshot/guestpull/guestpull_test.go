package guestpull

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func validPayload() Payload {
	return Payload{
		Version:        Version,
		ImageRef:       "registry.example/app:1.2",
		ManifestDigest: "sha256:" + strings.Repeat("1", 64),
		Layers:         []string{"sha256:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("b", 64)},
	}
}

func TestMountRoundTrip(t *testing.T) {
	p := validPayload()
	m, err := p.Mount("/var/lib/coffer/snapshotter/empty")
	require.NoError(t, err)
	assert.Equal(t, MountType, m.Type)
	assert.Equal(t, "/var/lib/coffer/snapshotter/empty", m.Source)
	require.Len(t, m.Options, 3)
	assert.Equal(t, []string{"ro", "rbind"}, m.Options[:2])
	assert.True(t, strings.HasPrefix(m.Options[2], OptionPrefix))

	got, ok, err := FromMount(m.Options)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, p, *got)
}

// TestWireFormat pins the option encoding the shim and cc-snapshotter of
// different builds must agree on.
func TestWireFormat(t *testing.T) {
	m, err := validPayload().Mount("/e")
	require.NoError(t, err)
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(m.Options[2], OptionPrefix))
	require.NoError(t, err)
	assert.JSONEq(t, `{"version":1,"image_ref":"registry.example/app:1.2",
		"manifest_digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111",
		"layers":["sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		          "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"]}`, string(b))
}

func TestValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(*Payload)
		want string
	}{
		"version":         {func(p *Payload) { p.Version = 2 }, "version 2 is not supported"},
		"no ref":          {func(p *Payload) { p.ImageRef = "" }, "no image_ref"},
		"bad manifest":    {func(p *Payload) { p.ManifestDigest = "sha256:xyz" }, `manifest_digest "sha256:xyz"`},
		"no layers":       {func(p *Payload) { p.Layers = nil }, "has no layers"},
		"bad layer":       {func(p *Payload) { p.Layers[1] = "nope" }, `layer 1 "nope"`},
		"empty manifest":  {func(p *Payload) { p.ManifestDigest = "" }, "manifest_digest"},
		"uppercase layer": {func(p *Payload) { p.Layers[0] = "sha256:" + strings.Repeat("A", 64) }, "layer 0"},
	} {
		t.Run(name, func(t *testing.T) {
			p := validPayload()
			tc.edit(&p)
			assert.ErrorContains(t, p.Validate(), tc.want)
			_, err := p.Mount("/e")
			assert.ErrorContains(t, err, tc.want, "Mount must refuse an invalid payload")
		})
	}
}

func TestFromMount(t *testing.T) {
	for _, opts := range [][]string{{"lowerdir=/a"}, {"ro"}, nil} {
		_, ok, err := FromMount(opts)
		assert.False(t, ok, "%v is not a guest-pull mount", opts)
		assert.NoError(t, err)
	}

	for name, tc := range map[string]struct {
		options []string
		want    string
	}{
		"bad base64": {[]string{OptionPrefix + "!!"}, "bad base64"},
		"bad JSON":   {[]string{OptionPrefix + base64.StdEncoding.EncodeToString([]byte("{"))}, "bad JSON"},
		"invalid": {[]string{OptionPrefix + base64.StdEncoding.EncodeToString([]byte(`{"version":1,"image_ref":"x","manifest_digest":"sha256:`+strings.Repeat("1", 64)+`","layers":[]}`))},
			"has no layers"},
	} {
		t.Run(name, func(t *testing.T) {
			p, ok, err := FromMount(tc.options)
			assert.True(t, ok, "a mount with the payload option is a guest-pull mount even when broken")
			assert.Nil(t, p)
			assert.ErrorContains(t, err, tc.want)
		})
	}
}
