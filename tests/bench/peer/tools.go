//go:build tools

// The peer `make bench` measures side by side with this daemon:
// squat/generic-device-plugin, pinned by this module's go.mod and built from
// the Go module proxy (tests/gotool.sh peer).
package peer

import (
	_ "github.com/squat/generic-device-plugin"
)
