//go:build tools

// The kubelet 1.35 the e2e runs its scenarios against as well.
package kubelet

import _ "k8s.io/kubernetes/cmd/kubelet"
