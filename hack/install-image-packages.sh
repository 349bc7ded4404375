#!/usr/bin/env bash
# Install the Debian packages `make image` needs, only those missing (idempotent; CI machines are fresh Debian 12
# with root and apt). What each is for:
#   mmdebstrap   makes the base image from Debian's own packages (bookworm's python3.11), no registry needed
#   buildah      builds the Dockerfile without a daemon (vfs storage, chroot isolation) and writes the OCI archive
set -euo pipefail
exec "$(dirname "$0")/install-debian-packages.sh" "the image build" mmdebstrap buildah
