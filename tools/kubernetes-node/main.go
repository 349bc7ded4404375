// Package main only pins the node's commands into this build module's go.sum.
// The binaries are built with `go build k8s.io/kubernetes/cmd/<name>`; this program is never run.
package main

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {}
