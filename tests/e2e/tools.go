//go:build tools

// The upstream commands the e2e runs (make e2e: the kubelet and containerd;
// make e2e-cluster adds the control plane and kubectl), pinned by this module's go.mod and
// built from the Go module proxy (tests/e2e/build.sh).
package e2e

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "sigs.k8s.io/kustomize/kustomize/v5"
)
