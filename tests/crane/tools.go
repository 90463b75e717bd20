//go:build tools

// crane, go-containerregistry's registry client, for the OCI image checks
// of `make test`: the image layout `make image` writes is pushed to crane's
// own in-memory registry and read back (tests/image/check.sh). Pinned by
// this module's go.mod, built by tests/gotool.sh crane.
package crane

import (
	_ "github.com/google/go-containerregistry/cmd/crane"
)
