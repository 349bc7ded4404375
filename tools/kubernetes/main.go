// Package main only pins the control-plane commands into this build module's go.sum.
// The binaries are built with `go build k8s.io/kubernetes/cmd/<name>`; this program is never run.
package main

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubectl/pkg/cmd"
)

func main() {}
