package cdh

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/cofferhq/coffer/kbs/resourcepath"
)

// ParseResourceURI parses a CoCo resource URI, "kbs:///repo/type/tag" or
// "kbs://host:port/repo/type/tag" (guest-components resource_uri), into the
// KBS resource path it names. The host part, if any, is ignored: resources
// always come from the attested KBS. Errors wrap errdefs.ErrInvalidArgument
// and name the URI and what was wrong with it.
func ParseResourceURI(uri string) (resourcepath.Path, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return resourcepath.Path{}, fmt.Errorf("parse resource URI %q: %v: want kbs:///<repository>/<type>/<tag>: %w", uri, err, errdefs.ErrInvalidArgument)
	}
	if u.Scheme != "kbs" {
		return resourcepath.Path{}, fmt.Errorf("parse resource URI %q: scheme %q, want \"kbs\" (kbs:///<repository>/<type>/<tag>): %w", uri, u.Scheme, errdefs.ErrInvalidArgument)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return resourcepath.Path{}, fmt.Errorf("parse resource URI %q: query, fragment and user info are not allowed: want kbs:///<repository>/<type>/<tag>: %w", uri, errdefs.ErrInvalidArgument)
	}
	p, err := resourcepath.Parse(strings.TrimPrefix(u.EscapedPath(), "/"))
	if err != nil {
		return resourcepath.Path{}, fmt.Errorf("parse resource URI %q: %w: %w", uri, err, errdefs.ErrInvalidArgument)
	}
	return p, nil
}
