//go:build tools

// Helm, for the chart checks of `make test` (lint, template, values schema)
// and the chart's install, upgrade and uninstall in `make e2e-cluster`;
// pinned by this module's go.mod and built from the Go module proxy
// (tests/gotool.sh helm).
package helm

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
