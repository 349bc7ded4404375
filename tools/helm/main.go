//go:build tools

// Package main pins the official Helm module so that go.mod and go.sum cover everything its command needs;
// the binary is built by package path: helm.sh/helm/v3/cmd/helm. The chart in charts/ is linted, rendered
// and installed with it in the tests.
package main

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
