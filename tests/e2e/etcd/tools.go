//go:build tools

// The CNI plugins make e2e-cluster's containerds call for each pod sandbox,
// pinned by this module's go.mod.
package main

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/main/ptp"
)
