// Package cdh is Coffer's confidential data hub: inside the guest, after
// attestation, it turns KBS resources into what workloads and the image pull
// need. This package holds the resource contract (ResourceGetter) and the
// ocicrypt key provider "attestation-agent" (CoCo's annotation format) that
// unwraps image layer keys with key-encryption keys fetched from the KBS.
// Sub-packages add sealed secrets (cdh/sealed) and the workload API server
// (cdh/apiserver).
package cdh

import "context"

// ResourceGetter fetches a KBS resource after attestation. uri is
// "kbs:///repo/type/tag" (CoCo resource URI; a host part
// "kbs://host:port/..." is accepted and ignored, the attested KBS is used).
// guest/aa.Agent implements it.
type ResourceGetter interface {
	Resource(ctx context.Context, uri string) ([]byte, error)
}
