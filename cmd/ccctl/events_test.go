package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/typeurl/v2"
	"github.com/stretchr/testify/require"

	ccevents "github.com/cofferhq/coffer/api/events/v1"
)

// TestFormatEventDecodesCofferTypes checks that /cc/attestation payloads,
// which `ctr events` cannot decode, come out as JSON in both formats.
func TestFormatEventDecodesCofferTypes(t *testing.T) {
	a, err := typeurl.MarshalAny(&ccevents.Attestation{ContainerId: "c1", Phase: "denied", Tee: "sim", Reason: "measurement mismatch"})
	require.NoError(t, err)
	e := &events.Envelope{
		Timestamp: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC),
		Namespace: "default", Topic: ccevents.TopicAttestation, Event: a,
	}
	line, err := formatEvent(e, false)
	require.NoError(t, err)
	require.Equal(t, `2026-11-30 12:00:00 +0000 UTC default /cc/attestation {"container_id":"c1","phase":"denied","tee":"sim","reason":"measurement mismatch"}`, line)

	line, err = formatEvent(e, true)
	require.NoError(t, err)
	var obj struct {
		Topic string
		Event ccevents.Attestation
	}
	require.NoError(t, json.Unmarshal([]byte(line), &obj))
	require.Equal(t, "/cc/attestation", obj.Topic)
	require.Equal(t, "denied", obj.Event.Phase)
	require.Equal(t, "measurement mismatch", obj.Event.Reason)
}
