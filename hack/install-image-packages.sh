#!/usr/bin/env bash
# Install the Debian packages `make image` needs, only those missing (idempotent; CI machines are fresh Debian 12
# with root and apt). What each is for:
#   mmdebstrap   makes the base image from Debian's own packages (bookworm's python3.11), no registry needed
#   buildah      builds the Dockerfile without a daemon (vfs storage, chroot isolation) and writes the OCI archive
set -euo pipefail
packages=(mmdebstrap buildah)
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
  echo "building the image needs these Debian packages, and installing them needs root: ${missing[*]}" >&2
  exit 1
fi
echo "==> installing Debian packages for the image build: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
