// Package events holds Coffer's own task event types (events.proto) and
// their topics. The types are protobuf messages, so containerd's typeurl
// encodes and decodes them by their full names (coffer.events.v1.*);
// a client links this package to decode them.
package events

// TopicWarning is the topic of Warning events.
const TopicWarning = "/cc/warning"

// TopicAttestation is the topic of Attestation events.
const TopicAttestation = "/cc/attestation"
