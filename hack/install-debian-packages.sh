#!/usr/bin/env bash
# install-debian-packages.sh <what needs them> <package>...: install the Debian packages that are missing, and
# only those (idempotent; CI machines are fresh Debian 12 with root and apt). Shared by
# install-node-packages.sh and install-image-packages.sh, which say what each package is for.
set -euo pipefail
purpose=$1
shift
missing=()
for package in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "$purpose needs these Debian packages, and installing them needs root: ${missing[*]}" >&2
  exit 1
fi
echo "==> installing Debian packages for $purpose: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
