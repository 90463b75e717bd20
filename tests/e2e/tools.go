//go:build tools

// The upstream commands the e2e runs, pinned by this module's go.mod and
// built from the Go module proxy (tests/e2e/build.sh).
package e2e

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
