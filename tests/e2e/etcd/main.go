// The etcd server of make e2e-cluster, built from go.etcd.io/etcd/server/v3
// at this module's pin: upstream's own entry point, nothing added.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
