package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStrayArgumentsRefused(t *testing.T) {
	app := newApp()
	var out bytes.Buffer
	app.Writer = &out
	// A stray positional argument (e.g. a config path without --config)
	// must not be ignored: the KBS would start with built-in defaults.
	err := app.Run([]string{"cc-kbs", "/etc/cc-kbs.toml"})
	require.EqualError(t, err, `unexpected argument "/etc/cc-kbs.toml": cc-kbs takes flags only (e.g. --config FILE); see cc-kbs --help`)

	// Flags alone still work.
	out.Reset()
	require.NoError(t, app.Run([]string{"cc-kbs", "--print-default-config"}))
	require.Contains(t, out.String(), "listen")
}
