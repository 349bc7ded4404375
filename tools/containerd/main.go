// Package main only pins containerd's commands into this build module's go.sum. The binaries are built
// with `go build github.com/containerd/containerd/v2/cmd/<name>`; this program is never run.
package main

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task/plugin"
	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"
	_ "github.com/containerd/containerd/v2/cmd/containerd/command"
	_ "github.com/containerd/containerd/v2/cmd/ctr/app"
	_ "github.com/containerd/containerd/v2/pkg/shim"
	_ "github.com/containerd/containerd/v2/pkg/tracing/plugin"
)

func main() {}
