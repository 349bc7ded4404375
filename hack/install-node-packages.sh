#!/usr/bin/env bash
# Install the Debian packages the optional real node needs, only those missing (idempotent; CI machines are
# fresh Debian 12 with root and apt). What each is for:
#   runc                          the OCI runtime containerd's runc shim calls
#   containernetworking-plugins   the CNI reference plugins in /usr/lib/cni: bridge, host-local, loopback, portmap
#   busybox-static                the static busybox the test Pods' image is made of
#   nftables                      the `nft` command kube-proxy's nftables mode runs
#   iptables                      the portmap CNI plugin programs hostPorts through it
set -euo pipefail
packages=(runc containernetworking-plugins busybox-static nftables iptables)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "the real node needs these Debian packages, and installing them needs root: ${missing[*]}" >&2
  exit 1
fi
echo "==> installing Debian packages for the real node: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
