//go:build tools

// The Prometheus linter `make test` runs on live scrapes of the daemon's
// /metrics (`promtool check metrics`), pinned by this module's go.mod and
// built from the Go module proxy (tests/gotool.sh promtool).
package promtool

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
