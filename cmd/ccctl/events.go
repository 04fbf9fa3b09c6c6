package main

import (
	"encoding/json"
	"fmt"
	"strings"

	// Link containerd's event types so they decode too.
	_ "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/typeurl/v2"
	"github.com/urfave/cli/v2"

	ccevents "github.com/cofferhq/coffer/api/events/v1"
)

// eventsCommand is `ccctl events`: containerd's event stream with Coffer's
// own event types (/cc/attestation, /cc/warning) decoded, which `ctr
// events` cannot do because it does not link them.
func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:      "events",
		Usage:     "print containerd events, decoding Coffer's /cc/* events",
		ArgsUsage: "[FILTER...]",
		Description: "Subscribes to containerd's events and prints one line per event, in ctr's format:\n" +
			"\"<timestamp> <namespace> <topic> <JSON payload>\". FILTERs are containerd event filters,\n" +
			"e.g. 'topic~=\"^/cc/\"' or 'namespace==k8s.io'. With --cc only Coffer's events are printed;\n" +
			"--json prints one JSON object per line instead. Runs until interrupted or --count events.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "address", Aliases: []string{"a"}, Value: "/run/containerd/containerd.sock", EnvVars: []string{"CONTAINERD_ADDRESS"}, Usage: "containerd gRPC `SOCKET`"},
			&cli.BoolFlag{Name: "cc", Usage: "only Coffer's events (topics /cc/*)"},
			&cli.BoolFlag{Name: "json", Usage: "one JSON object per line: {timestamp, namespace, topic, event}"},
			&cli.IntFlag{Name: "count", Usage: "exit after `N` events (0: run until interrupted)"},
		},
		Action: func(c *cli.Context) error {
			client, err := containerd.New(c.String("address"), containerd.WithTimeout(connectTimeout))
			if err != nil {
				return fmt.Errorf("events: connect to containerd at %s: %w", c.String("address"), err)
			}
			defer client.Close()
			filters := c.Args().Slice()
			if c.Bool("cc") {
				filters = append(filters, `topic~="^/cc/"`)
			}
			ch, errCh := client.EventService().Subscribe(c.Context, filters...)
			n := 0
			for {
				var e *events.Envelope
				select {
				case e = <-ch:
				case err := <-errCh:
					if c.Context.Err() != nil {
						return nil
					}
					return fmt.Errorf("events: subscription ended: %w", err)
				}
				line, err := formatEvent(e, c.Bool("json"))
				if err != nil {
					fmt.Fprintf(c.App.ErrWriter, "ccctl events: %s: %v\n", e.Topic, err)
					continue
				}
				fmt.Fprintln(c.App.Writer, line)
				if n++; c.Int("count") > 0 && n >= c.Int("count") {
					return nil
				}
			}
		},
	}
}

// formatEvent renders one event as ctr does, or as a JSON object.
func formatEvent(e *events.Envelope, asJSON bool) (string, error) {
	var payload json.RawMessage = []byte("null")
	if e.Event != nil {
		v, err := typeurl.UnmarshalAny(e.Event)
		if err != nil {
			return "", fmt.Errorf("decode %s: %w", e.Event.GetTypeUrl(), err)
		}
		if payload, err = json.Marshal(v); err != nil {
			return "", err
		}
	}
	if asJSON {
		b, err := json.Marshal(struct {
			Timestamp string          `json:"timestamp"`
			Namespace string          `json:"namespace"`
			Topic     string          `json:"topic"`
			Event     json.RawMessage `json:"event"`
		}{e.Timestamp.Format("2006-01-02T15:04:05.000000000Z07:00"), e.Namespace, e.Topic, payload})
		return string(b), err
	}
	if e.Event == nil {
		payload = nil
	}
	return strings.TrimRight(fmt.Sprintln(e.Timestamp, e.Namespace, e.Topic, string(payload)), "\n"), nil
}

// Coffer's event types register with protobuf when api/events/v1 is
// linked; this reference keeps the import even if no code names a type.
var _ = ccevents.TopicAttestation
