package agent

import (
	"fmt"
	"regexp"

	"github.com/containerd/errdefs"
)

// idPattern is the shape of container and exec IDs: 1 to 128 characters,
// alphanumerics plus '_', '.' and '-', not starting with a symbol. IDs
// become path components, so this also rules out "..", "/" and NUL.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// validateID checks a container or exec ID; field names the request field
// for the error ("container_id", "exec_id").
func validateID(field, id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%s %q is invalid: want 1-128 characters matching %s: %w",
			field, id, idPattern, errdefs.ErrInvalidArgument)
	}
	return nil
}

// validateIDs checks a container ID and, when non-empty, an exec ID.
func validateIDs(containerID, execID string) error {
	if err := validateID("container_id", containerID); err != nil {
		return err
	}
	if execID != "" {
		return validateID("exec_id", execID)
	}
	return nil
}
