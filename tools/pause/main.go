// Package main is the pause process of the node's local sandbox image: it holds a Pod's namespaces,
// reaps the orphans that end up as its children (it is PID 1 when the Pod shares its process
// namespace), and exits on SIGINT or SIGTERM. The same job as Kubernetes' pause.c, without C.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
