//go:build tools

// Package main pins the official conftest module so that go.mod and go.sum cover everything its
// command needs; the binary is built by package path: github.com/open-policy-agent/conftest.
package main

import (
	_ "github.com/open-policy-agent/conftest"
)
