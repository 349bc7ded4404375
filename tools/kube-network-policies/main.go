// Package main only pins kube-network-policies' command into this build module's go.sum: it imports what
// the upstream `cmd` package imports. The binary is built with
// `go build sigs.k8s.io/kube-network-policies/cmd` (patched, see nfqueue-xtables-target.patch); this
// program is never run.
package main

import (
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "golang.org/x/sys/unix"
	_ "k8s.io/apimachinery/pkg/util/runtime"
	_ "k8s.io/client-go/informers"
	_ "k8s.io/client-go/kubernetes"
	_ "k8s.io/client-go/rest"
	_ "k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-helpers/node/util"
	_ "k8s.io/klog/v2"
	_ "sigs.k8s.io/kube-network-policies/pkg/networkpolicy"
	_ "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
	_ "sigs.k8s.io/network-policy-api/pkg/client/informers/externalversions"
)

func main() {}
