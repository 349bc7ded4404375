//go:build tools

// Package main pins the official kube-score module so that go.mod and go.sum cover everything its
// command needs; the binary is built by package path: github.com/zegl/kube-score/cmd/kube-score.
package main

import (
	_ "github.com/zegl/kube-score/cmd/kube-score"
)
