#!/usr/bin/env bash
# Install the Debian packages the optional real node needs, only those missing (idempotent; CI machines are
# fresh Debian 12 with root and apt). What each is for:
#   runc                          the OCI runtime containerd's runc shim calls
#   containernetworking-plugins   the CNI reference plugins in /usr/lib/cni: bridge, host-local, loopback, portmap
#   busybox-static                the static busybox the test Pods' image is made of
#   nftables                      the `nft` command kube-proxy's nftables mode runs
#   iptables                      the portmap CNI plugin programs hostPorts through it
set -euo pipefail
exec "$(dirname "$0")/install-debian-packages.sh" "the real node" runc containernetworking-plugins busybox-static nftables iptables
