#!/usr/bin/env bash
# `make lock`: the lock files with hashes, from pyproject.toml. An existing lock is the starting point (uv keeps
# its pins where they still satisfy pyproject.toml), so only what changed moves; `make lock UPGRADE=1` takes the
# newest versions allowed. tests/packaging/test_locks.py checks the committed files are what this writes.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-.venv/bin/uv}
upgrade=()
if [ "${UPGRADE:-0}" = 1 ]; then upgrade=(--upgrade); fi
common=(--python-version 3.11 --python-platform x86_64-unknown-linux-gnu --generate-hashes --no-header --quiet "${upgrade[@]}")
"$uv" pip compile pyproject.toml "${common[@]}" -o requirements/runtime.txt
"$uv" pip compile pyproject.toml --extra dev "${common[@]}" -o requirements/dev.txt
