//go:build tools

// Package main pins the official Prometheus server and promtool so that go.mod and go.sum cover
// everything they need; the binaries are built by package path:
// github.com/prometheus/prometheus/cmd/prometheus and .../cmd/promtool.
package main

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
